// Destination fields (templates/_forms.html `destination`): show only the box for the chosen kind.
// Without this script every box is shown and the one matching the kind is used.
document.querySelectorAll("[data-destination]").forEach(function (set) {
  var kind = set.querySelector("select[name$='_kind']");
  function update() {
    set.querySelectorAll("[data-kind]").forEach(function (el) {
      var on = el.getAttribute("data-kind") === kind.value;
      el.hidden = !on;
      el.disabled = !on;
    });
  }
  kind.addEventListener("change", update);
  update();
});
