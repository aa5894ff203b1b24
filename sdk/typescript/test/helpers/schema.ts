/**
 * A small JSON-schema checker for the tests (the SDK has no runtime dependencies): type,
 * properties, required, additionalProperties: false, items, enum, minItems, maxItems,
 * minimum, maximum. Returns the problems found; [] when the value is valid.
 */

export type Schema = Record<string, unknown>;

function typeOf(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (typeof value === "number") return Number.isInteger(value) ? "integer" : "number";
  return typeof value;
}

export function validate(value: unknown, schema: Schema, path = "$"): string[] {
  const problems: string[] = [];
  const type = schema["type"];
  if (type !== undefined) {
    const allowed = Array.isArray(type) ? (type as string[]) : [type as string];
    const actual = typeOf(value);
    const ok = allowed.includes(actual) || (actual === "integer" && allowed.includes("number"));
    if (!ok) return [`${path}: expected ${allowed.join(" | ")}, got ${actual}`];
  }
  if (Array.isArray(schema["enum"]) && !schema["enum"].some((e) => JSON.stringify(e) === JSON.stringify(value))) {
    problems.push(`${path}: ${JSON.stringify(value)} is not one of ${JSON.stringify(schema["enum"])}`);
  }
  if (typeof value === "number") {
    if (typeof schema["minimum"] === "number" && value < schema["minimum"]) problems.push(`${path}: below minimum`);
    if (typeof schema["maximum"] === "number" && value > schema["maximum"]) problems.push(`${path}: above maximum`);
  }
  if (typeOf(value) === "object") {
    const obj = value as Record<string, unknown>;
    const props = (schema["properties"] ?? {}) as Record<string, Schema>;
    for (const key of (schema["required"] ?? []) as string[]) {
      if (!(key in obj)) problems.push(`${path}: missing required property ${key}`);
    }
    for (const [key, v] of Object.entries(obj)) {
      const sub = props[key];
      if (sub !== undefined) problems.push(...validate(v, sub, `${path}.${key}`));
      else if (schema["additionalProperties"] === false) problems.push(`${path}: unexpected property ${key}`);
    }
  }
  if (Array.isArray(value)) {
    if (typeof schema["minItems"] === "number" && value.length < schema["minItems"]) problems.push(`${path}: too few items`);
    if (typeof schema["maxItems"] === "number" && value.length > schema["maxItems"]) problems.push(`${path}: too many items`);
    const items = schema["items"] as Schema | undefined;
    if (items !== undefined) value.forEach((v, i) => problems.push(...validate(v, items, `${path}[${i}]`)));
  }
  return problems;
}
