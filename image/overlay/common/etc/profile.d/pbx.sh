# The `pbx` command on the box's console: its data is the services' (StateDirectory=pbx).
export PBX_DATA=/var/lib/pbx
case ":$PATH:" in *:/opt/pbx/.venv/bin:*) ;; *) PATH="$PATH:/opt/pbx/.venv/bin" ;; esac
