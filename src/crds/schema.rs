//! Edits of a generated OpenAPI v3 schema: find a field by its path, merge keywords into
//! it, and tidy what schemars writes. The rules themselves live in `rules.rs`; this file
//! knows nothing about serval's kinds.

use serde_json::{Map, Number, Value};

/// A schema edit whose path does not exist: the Rust type and the rules disagree (a
/// field was renamed or removed), which must fail the generator rather than silently
/// drop a validation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{kind}: schema path {path:?} does not exist (was the field renamed or removed?)")]
pub struct NoSuchPath {
    pub kind: String,
    pub path: String,
}

/// The schema node at `path` under `root`: property names joined by `.`, a name followed
/// by `[]` steps into the array's `items`; the empty path is the root.
///
/// `spec.exportV4[].cidr` is `properties.spec.properties.exportV4.items.properties.cidr`.
pub fn node_mut<'a>(root: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    let mut node = root;
    if path.is_empty() {
        return Some(node);
    }
    for part in path.split('.') {
        let (name, items) = match part.strip_suffix("[]") {
            Some(n) => (n, true),
            None => (part, false),
        };
        node = node.get_mut("properties")?.get_mut(name)?;
        if items {
            node = node.get_mut("items")?;
        }
    }
    Some(node)
}

/// Merges `patch` into `node`: objects merge key by key (recursively), the
/// `x-kubernetes-validations` list grows, anything else replaces what was there.
pub fn merge(node: &mut Value, patch: Value) {
    match (node, patch) {
        (Value::Object(into), Value::Object(from)) => {
            for (k, v) in from {
                match (k.as_str(), into.get_mut(&k)) {
                    ("x-kubernetes-validations", Some(Value::Array(list))) => {
                        if let Value::Array(more) = v {
                            list.extend(more);
                        }
                    }
                    (_, Some(existing)) if existing.is_object() && v.is_object() => {
                        merge(existing, v)
                    }
                    _ => {
                        into.insert(k, v);
                    }
                }
            }
        }
        (node, patch) => *node = patch,
    }
}

/// Rewrites integral floats as integers: schemars writes `minimum: 0.0` for unsigned
/// fields, which Kubernetes accepts but reads badly and compares as a float.
pub fn integral_numbers(v: &mut Value) {
    match v {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
                if f.fract() == 0.0 && f >= 0.0 && f <= u64::MAX as f64 {
                    *n = Number::from(f as u64);
                } else if f.fract() == 0.0 && f < 0.0 && f >= i64::MIN as f64 {
                    *n = Number::from(f as i64);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(integral_numbers),
        Value::Object(o) => o.values_mut().for_each(integral_numbers),
        _ => {}
    }
}

/// Removes the `format` keywords schemars derives from Rust integer widths (`uint8`,
/// `uint32`, …): they are not OpenAPI formats, Kubernetes ignores them, and the ranges
/// they stand for are written as `minimum`/`maximum` anyway.
pub fn drop_rust_formats(v: &mut Value) {
    match v {
        Value::Object(o) => {
            let rust_width = matches!(
                o.get("format").and_then(Value::as_str),
                Some("uint" | "uint8" | "uint16" | "uint32" | "uint64" | "int8" | "int16")
            );
            if rust_width {
                o.remove("format");
            }
            o.values_mut().for_each(drop_rust_formats);
        }
        Value::Array(a) => a.iter_mut().for_each(drop_rust_formats),
        _ => {}
    }
}

/// Every `x-kubernetes-validations` rule of a schema with the path of the node that
/// carries it (same syntax as [`node_mut`]).
pub fn cel_rules(root: &Value) -> Vec<(String, Map<String, Value>)> {
    let mut out = Vec::new();
    walk_rules(root, String::new(), &mut out);
    out
}

fn walk_rules(node: &Value, path: String, out: &mut Vec<(String, Map<String, Value>)>) {
    if let Some(Value::Array(rules)) = node.get("x-kubernetes-validations") {
        for r in rules {
            if let Value::Object(r) = r {
                out.push((path.clone(), r.clone()));
            }
        }
    }
    if let Some(Value::Object(props)) = node.get("properties") {
        for (name, child) in props {
            let p = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            walk_rules(child, p.clone(), out);
            if let Some(items) = child.get("items") {
                walk_rules(items, format!("{p}[]"), out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "exportV4": {"type": "array", "items": {"type": "object", "properties": {
                "cidr": {"type": "string"}}}},
            "asNumber": {"type": "integer", "format": "uint32", "minimum": 0.0}}}}})
    }

    #[test]
    fn paths_step_into_properties_and_items() {
        let mut s = sample();
        assert!(node_mut(&mut s, "spec.exportV4[].cidr").is_some());
        assert!(node_mut(&mut s, "spec.asNumber").is_some());
        assert!(node_mut(&mut s, "").is_some());
        assert!(
            node_mut(&mut s, "spec.exportV4.cidr").is_none(),
            "no [] for items"
        );
        assert!(node_mut(&mut s, "spec.exportV6[].cidr").is_none());
    }

    #[test]
    fn merge_appends_rules_and_replaces_scalars() {
        let mut s = sample();
        let rule = |r: &str| json!({"x-kubernetes-validations": [{"rule": r}]});
        let spec = node_mut(&mut s, "spec").unwrap();
        merge(spec, rule("a"));
        merge(spec, rule("b"));
        merge(spec, json!({"description": "x"}));
        merge(spec, json!({"description": "y"}));
        assert_eq!(
            spec["x-kubernetes-validations"],
            json!([{"rule": "a"}, {"rule": "b"}])
        );
        assert_eq!(spec["description"], "y");
        assert_eq!(spec["properties"]["asNumber"]["type"], "integer");
    }

    #[test]
    fn tidying_numbers_and_formats() {
        let mut s = sample();
        integral_numbers(&mut s);
        drop_rust_formats(&mut s);
        let asn = node_mut(&mut s, "spec.asNumber").unwrap();
        assert_eq!(asn, &json!({"type": "integer", "minimum": 0}));
        let mut f = json!({"maximum": 1.5});
        integral_numbers(&mut f);
        assert_eq!(f, json!({"maximum": 1.5}));
    }

    #[test]
    fn rules_are_listed_with_their_paths() {
        let mut s = sample();
        merge(
            node_mut(&mut s, "spec.exportV4[]").unwrap(),
            json!({"x-kubernetes-validations": [{"rule": "true"}]}),
        );
        let rules = cel_rules(&s);
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].0, "spec.exportV4[]");
    }
}
