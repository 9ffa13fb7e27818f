#!/bin/bash
# The development signing keys for update bundles: a CA (its certificate goes into the image as
# /etc/rauc/keyring.pem) and a signing certificate issued by it. Made once per build machine in
# build/image/keys/ (never committed); a box accepts only bundles signed under the CA it was built
# with. For your own CA: put ca.cert.pem, signing.cert.pem and signing.key.pem in a directory and
# set PBX_IMAGE_KEYS=DIR for make image and make bundle (README, "Updates").
set -euo pipefail
keys=${1:?usage: image/keys.sh DIR}
[ -e "$keys/ca.cert.pem" ] && [ -e "$keys/signing.cert.pem" ] && [ -e "$keys/signing.key.pem" ] && exit 0
mkdir -p "$keys"
chmod 0700 "$keys"
cd "$keys"
echo "    making a development CA and signing key in $keys (keep them: boxes built with this CA accept only bundles signed by it)"
cat > openssl.cnf <<'CNF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = placeholder
[v3_ca]
basicConstraints = critical,CA:true
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[v3_leaf]
basicConstraints = critical,CA:false
keyUsage = critical,digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
CNF
openssl req -x509 -new -newkey rsa:3072 -nodes -days 3650 -config openssl.cnf -extensions v3_ca \
    -subj "/O=Office PBX development/CN=Office PBX update CA ($(hostname))" -keyout ca.key.pem -out ca.cert.pem 2>/dev/null
openssl req -new -newkey rsa:3072 -nodes -config openssl.cnf -subj "/O=Office PBX development/CN=Office PBX update signing" \
    -keyout signing.key.pem -out signing.csr.pem 2>/dev/null
openssl x509 -req -in signing.csr.pem -CA ca.cert.pem -CAkey ca.key.pem -CAcreateserial -days 3650 \
    -extfile openssl.cnf -extensions v3_leaf -out signing.cert.pem 2>/dev/null
rm -f signing.csr.pem ca.cert.srl
chmod 0600 ./*.key.pem
