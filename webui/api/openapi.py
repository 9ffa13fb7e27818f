"""OpenAPI 3.1 description of /api/v1, served at /api/openapi.json and rendered at /api/docs.

Written by hand next to the views; a test checks that every /api/v1 route is described here and
that nothing described here is missing from the app.
"""
from __future__ import annotations

from webui.system.views import software_version

S = "#/components/schemas/"


def _ref(name: str) -> dict:
    return {"$ref": S + name}


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERRORS = {
    "400": _json(_ref("Error"), "Invalid input: every bad field is listed in `errors`"),
    "401": _json(_ref("Error"), "No or unknown token"),
    "403": _json(_ref("Error"), "Not allowed for this account"),
}
NOT_FOUND = {"404": _json(_ref("Error"), "No such object")}
CONFLICT = {"409": _json(_ref("Error"), "Already exists, or still in use")}


def _body(schema: dict) -> dict:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _crud(tag: str, item: str, key: str, key_desc: str, create_schema: str, update_schema: str,
          out_schema: str) -> dict:
    ident = {"name": key, "in": "path", "required": True, "schema": {"type": "string"}, "description": key_desc}
    return {
        f"/api/v1/{tag}": {
            "get": {"tags": [tag], "summary": f"List {item}s",
                    "responses": {"200": _json({"type": "array", "items": _ref(out_schema)}), **ERRORS}},
            "post": {"tags": [tag], "summary": f"Create a {item}", "requestBody": _body(_ref(create_schema)),
                     "responses": {"201": _json(_ref(out_schema), "Created"), **ERRORS, **CONFLICT}},
        },
        f"/api/v1/{tag}/{{{key}}}": {
            "parameters": [ident],
            "get": {"tags": [tag], "summary": f"One {item}",
                    "responses": {"200": _json(_ref(out_schema)), **ERRORS, **NOT_FOUND}},
            "patch": {"tags": [tag], "summary": f"Change fields of a {item}", "requestBody": _body(_ref(update_schema)),
                      "responses": {"200": _json(_ref(out_schema)), **ERRORS, **NOT_FOUND}},
            "delete": {"tags": [tag], "summary": f"Delete a {item}",
                       "responses": {"204": {"description": "Deleted"}, **ERRORS, **NOT_FOUND, **CONFLICT}},
        },
    }


def _destination(forward: bool = False) -> dict:
    """A typed destination string, described from firmware's registered kinds (a kind added
    there appears here without a change)."""
    from webui.destinations import kinds
    forms = [f"'{k.name}:{k.example}'" if k.takes_target else f"'{k.name}'" for k in kinds(forward)]
    examples = [f"{k.name}:{k.example}" if k.takes_target else k.name for k in kinds(forward)]
    return {"type": "string", "examples": ([""] if forward else []) + examples,
            "description": f"kind:target, one of {', '.join(forms)}; a bare extension number means "
                           "that extension"}


def _contact_schemas() -> dict:
    """Phonebook contacts (webui/phonebook): company ones have owner "", a user's own their extension."""
    phone = {"type": "string", "maxLength": 30, "examples": ["07700 900123"],
             "description": "digits with an optional '+'; spaces, dashes and brackets are dropped"}
    fields = {"name": {"type": "string", "minLength": 1, "maxLength": 60}, "company": {"type": "string", "maxLength": 60},
              "work": phone, "mobile": phone, "other": phone, "email": {"type": "string", "maxLength": 100},
              "owner": {"type": "string", "description": "'' (company contact) or the extension whose contact it is"}}
    return {"Contact": {"type": "object", "properties": {"id": {"type": "string"}, **fields}},
            "ContactCreate": {"type": "object", "additionalProperties": False, "required": ["name"],
                              "properties": fields},
            "ContactUpdate": {"type": "object", "additionalProperties": False, "properties": fields}}


def _schemas() -> dict:
    number = {"type": "string", "pattern": "^[1-9][0-9]{1,5}$", "examples": ["201"]}
    secret = {"type": "string", "minLength": 12, "maxLength": 64,
              "description": "SIP digest password; not all digits, not the number"}
    name = {"type": "string", "minLength": 1, "maxLength": 40}
    slug = {"type": "string", "pattern": "^[a-z][a-z0-9_-]{0,31}$"}
    pattern = {"type": "string", "maxLength": 40, "examples": ["_9NXXXXXX", "_00.", "999"],
               "description": "Asterisk dial pattern: '_' then digits, X (0-9), Z (1-9), N (2-9), [1-5]; "
                              "'.' (one or more) or '!' (zero or more) last. Without '_': a literal number."}
    trunk_fields = {"host": {"type": "string", "examples": ["sip.carrier.net:5060"]},
                    "username": {"type": "string", "maxLength": 64},
                    "secret": {"type": "string", "maxLength": 64, "writeOnly": True},
                    "register": {"type": "boolean", "default": True},
                    "transport": {"type": "string", "enum": ["udp", "tcp", "tls"], "default": "udp"}}
    # in list answers: the running edge's view of the trunk (Status.trunks has the same fields)
    trunk_state_fields = {
        "state": {"type": "string", "enum": ["registered", "registering", "failed", "disabled", "ip", "unknown"],
                  "description": "registration state; ip: no registration, calls known by address; "
                                 "unknown: the PBX is not running"},
        "last_code": {"type": ["integer", "null"], "description": "last final answer to our REGISTER "
                                                                  "(408: none came)"},
        "expires": {"type": ["integer", "null"], "description": "seconds left of the registration"}}
    phone = {"type": "string", "pattern": r"^(\+?[0-9]{1,20})?$", "examples": ["+442071234567"]}
    outbound_fields = {"pattern": pattern, "trunk": slug,
                       "fallback_trunk": {"type": "string", "description": "empty for none"},
                       "strip": {"type": "integer", "minimum": 0, "maximum": 20},
                       "prepend": {"type": "string", "pattern": "^[0-9*#+]{0,20}$"},
                       "caller_id": {**phone, "description": "number shown to callees; an extension's own "
                                                            "external_caller_id wins; empty: the trunk's"},
                       "extensions": {"type": "array", "items": number, "uniqueItems": True,
                                      "description": "extensions that may use the route; empty: every "
                                                     "extension (emergency numbers are always allowed)"}}
    department = {"type": "string", "maxLength": 40,
                  "description": "for reports: calls and cost per department; '' for none"}
    forward = _destination(forward=True)
    call_handling = {
        "dnd": {"type": "boolean", "description": "do not disturb (*78 on, *79 off)"},
        "forward_always": {**forward, "description": "every call goes here; '' for none (*72NUM, *73). "
                                                     + forward["description"]},
        "forward_busy": {**forward, "description": "when busy or on DND; '' for none (*90NUM, *91)"},
        "forward_no_answer": {**forward, "description": "when not answered or not registered; '' for none "
                                                        "(*52NUM, *53)"}}
    caller_id = {**phone, "description": "number outside callees see when this extension dials out "
                                         "(wins over the route's); empty for the default"}
    inbound_fields = {"destination": _destination(),
                      "name": {"type": "string", "maxLength": 40},
                      "match_national": {"type": "boolean", "default": False,
                                         "description": "also match the other written forms of the DID in "
                                                        "the site's country (0…, 44…, +44…, 0044…)"}}
    settings = {"site_name": name, "country": {"type": "string", "enum": ["uk", "us"]},
                "no_answer_timeout": {"type": "integer", "minimum": 5, "maximum": 300},
                "busy_tone_seconds": {"type": "integer", "minimum": 0, "maximum": 30},
                "timezone": {"type": "string", "examples": ["Europe/London"]},
                "sip_domain": {"type": "string", "description": "address phones use; empty = this box"},
                "mode": {"type": "string", "enum": ["day", "night"]},
                "record_calls": {"type": "boolean"},
                "recording_retention_days": {"type": "integer", "minimum": 0, "maximum": 3650,
                                             "description": "recordings older than this are deleted; 0 keeps them"},
                "smtp_host": {"type": "string", "description": "mail server; empty = no mail"},
                "smtp_port": {"type": "integer", "minimum": 1, "maximum": 65535},
                "smtp_user": {"type": "string", "maxLength": 128},
                "smtp_password": {"type": "string", "maxLength": 128, "writeOnly": True},
                "smtp_password_set": {"type": "boolean", "readOnly": True},
                "smtp_from": {"type": "string", "examples": ["pbx@example.com"]},
                "smtp_tls": {"type": "string", "enum": ["starttls", "tls", "none"]},
                "trusted_networks": {"type": "array", "items": {"type": "string", "examples": ["192.168.1.0/24"]},
                                     "description": "IPv4 networks or addresses exempt from the SIP flood "
                                                    "limit (phones behind one NAT, a SIP peer)"}}
    return {
        "Error": {"type": "object", "required": ["error"], "properties": {
            "error": {"type": "string"},
            "errors": {"type": "array", "items": {"type": "object", "properties": {
                "field": {"type": "string"}, "message": {"type": "string"}}}}}},
        "Extension": {"type": "object", "properties": {
            "number": number, "name": name, "enabled": {"type": "boolean"},
            "secret": {**secret, "description": "only in single-extension answers"},
            "registered": {"type": "boolean"}, "contacts": {"type": "array", "items": {"type": "string"}},
            **call_handling, "external_caller_id": caller_id, "department": department}},
        "ExtensionCreate": {"type": "object", "required": ["number", "name"], "additionalProperties": False,
                            "properties": {"number": number, "name": name,
                                           "secret": {**secret, "description": "omit to generate one"}}},
        "ExtensionUpdate": {"type": "object", "additionalProperties": False, "properties": {
            "name": name, "secret": {**secret, "description": "admins only"},
            "enabled": {"type": "boolean", "description": "admins only"},
            **call_handling, "external_caller_id": {**caller_id, "description": "admins only; "
                                                    + caller_id["description"]},
            "department": {**department, "description": "admins only; " + department["description"]}}},
        "Trunk": {"type": "object", "properties": {"name": slug, **{k: v for k, v in trunk_fields.items()
                                                                    if k != "secret"},
                                                   "secret_set": {"type": "boolean"},
                                                   **trunk_state_fields}},
        "TrunkCreate": {"type": "object", "required": ["name", "host"], "additionalProperties": False,
                        "properties": {"name": slug, **trunk_fields}},
        "TrunkUpdate": {"type": "object", "additionalProperties": False, "properties": trunk_fields},
        "InboundRoute": {"type": "object", "required": ["did", "destination"], "additionalProperties": False,
                         "properties": {"did": {"type": "string", "pattern": r"^\+?[0-9]{1,20}$"},
                                        **inbound_fields}},
        "InboundRouteUpdate": {"type": "object", "additionalProperties": False, "properties": inbound_fields},
        **_contact_schemas(),
        "OutboundRoute": {"type": "object", "required": ["name", "pattern", "trunk"], "additionalProperties": False,
                          "properties": {"name": slug, **outbound_fields}},
        "OutboundRouteUpdate": {"type": "object", "additionalProperties": False, "properties": outbound_fields},
        "Settings": {"type": "object", "additionalProperties": False, "properties": settings},
        "CallRecord": {"type": "object", "properties": {
            "call_id": {"type": "string"}, "src": {"type": "string"}, "dst": {"type": "string"},
            "start": {"type": "string", "format": "date-time"},
            "answer": {"type": ["string", "null"], "format": "date-time"},
            "end": {"type": "string", "format": "date-time"}, "duration": {"type": "number"},
            "billsec": {"type": "integer"},
            "disposition": {"type": "string", "enum": ["ANSWERED", "BUSY", "NO ANSWER", "FAILED", "CANCELLED"]},
            "cause": {"type": "string"},
            "cost": {"type": ["string", "null"], "description": "exact decimal in currency, e.g. '0.01100'"},
            "currency": {"type": "string"}, "rate": {"type": "string"}, "dest_type": {"type": "string"},
            "sheet_version": {"type": "string"}}},
        "Status": {"type": "object", "properties": {
            "running": {"type": "boolean"}, "uptime": {"type": ["number", "null"]},
            "version": {"type": ["string", "null"]}, "registrations": {"type": "array", "items": {"type": "object"}},
            "calls": {"type": "array", "items": {"type": "object"}}, "trunks": {"type": "array", "items": {
                "type": "object", "properties": {"name": slug, "host": {"type": "string"},
                                                 "transport": {"type": "string"}, "register": {"type": "boolean"},
                                                 **trunk_state_fields}}}}},
        "Backup": {"type": "object", "required": ["format", "schema_version"], "properties": {
            "format": {"const": "officepbx-config"}, "schema_version": {"type": "integer"},
            "settings": _ref("Settings"), "extensions": {"type": "array", "items": {"type": "object"}},
            "trunks": {"type": "array", "items": {"type": "object"}},
            "inbound_routes": {"type": "array", "items": _ref("InboundRoute")},
            "outbound_routes": {"type": "array", "items": _ref("OutboundRoute")},
            "line_ports": {"type": "array", "items": {"type": "object"}}}},
    }


def _queues() -> dict:
    """Call queues (webui/queues): the queues with their live state, statistics, the queue log."""
    days = [{"name": "from", "in": "query", "schema": {"type": "string"}, "description": "YYYY-MM-DD (default today)"},
            {"name": "to", "in": "query", "schema": {"type": "string"}, "description": "YYYY-MM-DD (inclusive)"}]
    obj = {"type": "object"}
    return {
        "/api/v1/queues": {"get": {"tags": ["queues"], "summary": "Queues with their settings, static members and live "
                                                                 "state (callers waiting, agents)",
                                   "responses": {"200": _json(obj), **ERRORS}}},
        "/api/v1/queues/stats": {"get": {
            "tags": ["queues"], "summary": "Per queue and per agent: offered, answered, abandoned, service level, "
                                           "waits, talk time, occupancy; per day and per hour",
            "parameters": days + [{"name": "queue", "in": "query", "schema": {"type": "string"}}],
            "responses": {"200": _json(obj), **ERRORS}}},
        "/api/v1/queues/log": {"get": {"tags": ["queues"], "summary": "The queue log's events (as Asterisk's queue_log)",
                                       "parameters": days, "responses": {"200": _json(obj), **ERRORS}}},
        "/api/v1/queues/wallboard": {"get": {"tags": ["queues"], "summary": "What the wallboard shows (any user)",
                                             "responses": {"200": _json(obj), **ERRORS}}},
    }


def spec(app=None) -> dict:
    cdr_params = [
        {"name": "since", "in": "query", "schema": {"type": "string"}, "description": "YYYY-MM-DD or ISO time (site zone)"},
        {"name": "until", "in": "query", "schema": {"type": "string"}, "description": "YYYY-MM-DD (inclusive day) or ISO time"},
        {"name": "extension", "in": "query", "schema": {"type": "string"}, "description": "caller or callee"},
        {"name": "disposition", "in": "query", "schema": {"type": "string"}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}},
    ]
    ext_param = {"name": "number", "in": "path", "required": True, "schema": {"type": "string"}}
    paths = {
        "/api/v1/extensions": {
            "get": {"tags": ["extensions"], "summary": "List extensions (no secrets) with registration state",
                    "responses": {"200": _json({"type": "array", "items": _ref("Extension")}), **ERRORS}},
            "post": {"tags": ["extensions"], "summary": "Create an extension; the answer holds its SIP password",
                     "requestBody": _body(_ref("ExtensionCreate")),
                     "responses": {"201": _json(_ref("Extension"), "Created"), **ERRORS, **CONFLICT}}},
        "/api/v1/extensions/{number}": {
            "parameters": [ext_param],
            "get": {"tags": ["extensions"], "summary": "One extension with its SIP password (admin, or its own user)",
                    "responses": {"200": _json(_ref("Extension")), **ERRORS, **NOT_FOUND}},
            "patch": {"tags": ["extensions"], "summary": "Change name, DND and forwards (users: own extension); "
                                                           "secret, enabled, external caller ID (admins)",
                      "requestBody": _body(_ref("ExtensionUpdate")),
                      "responses": {"200": _json(_ref("Extension")), **ERRORS, **NOT_FOUND}},
            "delete": {"tags": ["extensions"], "summary": "Delete an extension (refused while an inbound route rings it)",
                       "responses": {"204": {"description": "Deleted"}, **ERRORS, **NOT_FOUND, **CONFLICT}}},
        "/api/v1/extensions/{number}/secret": {
            "parameters": [ext_param],
            "post": {"tags": ["extensions"], "summary": "Generate a new SIP password",
                     "responses": {"200": _json(_ref("Extension")), **ERRORS, **NOT_FOUND}}},
        **_crud("trunks", "trunk", "ident", "trunk name", "TrunkCreate", "TrunkUpdate", "Trunk"),
        **_crud("contacts", "phonebook contact", "contact_id", "contact id", "ContactCreate", "ContactUpdate",
                "Contact"),
        **_crud("inbound-routes", "inbound route", "ident", "the DID", "InboundRoute", "InboundRouteUpdate",
                "InboundRoute"),
        **_crud("outbound-routes", "outbound route", "ident", "route name", "OutboundRoute",
                "OutboundRouteUpdate", "OutboundRoute"),
        "/api/v1/settings": {
            "get": {"tags": ["settings"], "summary": "Site settings", "responses": {"200": _json(_ref("Settings")), **ERRORS}},
            "patch": {"tags": ["settings"], "summary": "Change settings (all or nothing)",
                      "requestBody": _body(_ref("Settings")),
                      "responses": {"200": _json(_ref("Settings")), **ERRORS}}},
        "/api/v1/status": {"get": {"tags": ["status"], "summary": "Running PBX: registrations, calls, trunks",
                                   "responses": {"200": _json(_ref("Status")), **ERRORS}}},
        "/api/v1/cdr": {"get": {"tags": ["cdr"], "summary": "Call detail records, newest first",
                                "parameters": cdr_params,
                                "responses": {"200": _json({"type": "array", "items": _ref("CallRecord")}), **ERRORS}}},
        "/api/v1/cdr.csv": {"get": {"tags": ["cdr"], "summary": "Call detail records as CSV", "parameters": cdr_params,
                                    "responses": {"200": {"description": "CSV",
                                                          "content": {"text/csv": {"schema": {"type": "string"}}}},
                                                  **ERRORS}}},
        "/api/v1/reports": {"get": {
            "tags": ["cdr"], "summary": "Call reports: calls, minutes and cost per period, extension, destination "
                                       "type and trunk; top destinations; busiest hours (the Reports page)",
            "parameters": [{"name": "since", "in": "query", "schema": {"type": "string"}, "description": "YYYY-MM-DD"},
                           {"name": "until", "in": "query", "schema": {"type": "string"},
                            "description": "YYYY-MM-DD (inclusive)"},
                           {"name": "group", "in": "query", "schema": {"type": "string", "enum": ["day", "week", "month"]}}],
            "responses": {"200": _json({"type": "object"}), **ERRORS}}},
        "/api/v1/reports.csv": {"get": {"tags": ["cdr"], "summary": "The call report as CSV (one table, a section column)",
                                        "responses": {"200": {"description": "CSV", "content": {
                                            "text/csv": {"schema": {"type": "string"}}}}, **ERRORS}}},
        **_queues(),
        "/api/v1/backup": {"get": {"tags": ["system"], "summary": "The whole configuration as one document",
                                   "responses": {"200": _json(_ref("Backup")), **ERRORS}}},
        "/api/v1/restore": {"post": {
            "tags": ["system"], "summary": "Replace the whole configuration; checked completely first, all or nothing",
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("Backup")},
                "multipart/form-data": {"schema": {"type": "object", "properties": {
                    "backup_file": {"type": "string", "format": "binary"}}}}}},
            "responses": {"200": _json({"type": "object"}), **ERRORS,
                          "413": _json(_ref("Error"), "Larger than 1 MB")}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Office PBX API", "version": software_version(),
                 "description": "Create a token on the System page and send `Authorization: Bearer TOKEN`. "
                                "Every change applies to the running PBX at once."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {"schemas": _schemas(),
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
