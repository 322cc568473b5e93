#![allow(dead_code)] // each test crate uses a part of it
//! Checks a manifest against the generated CRDs the way the API server does, without a
//! server: the `openAPIV3Schema` through the `jsonschema` crate, with Kubernetes'
//! strict field validation (an unknown field is an error, as `kubectl apply` reports it
//! by default) and schema defaults applied first; then every `x-kubernetes-validations`
//! CEL rule evaluated with the `cel` crate (transition rules only when an old object is
//! given, as on an update).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Value};

/// Which check refused a manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Schema,
    Cel,
}

/// One refusal: the field path from the document root (`spec.peerIP`,
/// `spec.exportV4[0].cidr`) and why.
#[derive(Clone, Debug)]
pub struct Violation {
    pub path: String,
    pub message: String,
    pub source: Source,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} {}: {}", self.source, self.path, self.message)
    }
}

/// The CRDs of a directory, by kind.
pub struct Crds {
    /// kind → (group/version, openAPIV3Schema).
    pub by_kind: BTreeMap<String, (String, Value)>,
}

/// Reads every `*.yaml` CRD of `dir`.
pub fn load(dir: &Path) -> Crds {
    let mut by_kind = BTreeMap::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    entries.sort();
    for path in entries {
        let text = std::fs::read_to_string(&path).unwrap();
        let crd: Value =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap().to_owned();
        let group = crd["spec"]["group"].as_str().unwrap();
        let version = &crd["spec"]["versions"][0];
        let api = format!("{group}/{}", version["name"].as_str().unwrap());
        let schema = version["schema"]["openAPIV3Schema"].clone();
        by_kind.insert(kind, (api, schema));
    }
    Crds { by_kind }
}

impl Crds {
    /// Every violation of `doc` (a whole manifest: apiVersion, kind, metadata, spec…);
    /// `old` is the stored object on an update.
    pub fn check(&self, doc: &Value, old: Option<&Value>) -> Vec<Violation> {
        let kind = doc["kind"].as_str().unwrap_or_default();
        let Some((api, schema)) = self.by_kind.get(kind) else {
            return vec![Violation {
                path: "kind".into(),
                message: format!("no CRD for kind {kind:?}"),
                source: Source::Schema,
            }];
        };
        let mut doc = doc.clone();
        apply_defaults(schema, &mut doc);
        let strict = json_schema(schema, api, kind);
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .with_format("cidr", |s: &str| s.parse::<ipnet::IpNet>().is_ok())
            .build(&strict)
            .unwrap_or_else(|e| panic!("{kind}: schema does not compile: {e}"));
        let mut out: Vec<Violation> = validator
            .iter_errors(&doc)
            .map(|e| Violation {
                path: dotted(&e.instance_path().to_string()),
                message: e.to_string(),
                source: Source::Schema,
            })
            .collect();
        let mut old = old.cloned();
        if let Some(o) = old.as_mut() {
            apply_defaults(schema, o);
        }
        cel_walk(schema, &doc, old.as_ref(), String::new(), &mut out);
        out
    }
}

/// `/spec/exportV4/0/cidr` → `spec.exportV4[0].cidr`.
fn dotted(pointer: &str) -> String {
    let mut out = String::new();
    for part in pointer.split('/').filter(|p| !p.is_empty()) {
        if part.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

/// The schema as standard JSON Schema: `nullable` becomes a `null` type, a `set` list
/// takes no duplicates, objects with `properties` take no others (strict field
/// validation), and the root gets the
/// envelope fields the API server adds to every CRD.
fn json_schema(schema: &Value, api: &str, kind: &str) -> Value {
    let mut s = schema.clone();
    standardize(&mut s);
    let props = s["properties"].as_object_mut().expect("root properties");
    props.insert("apiVersion".into(), json!({"const": api}));
    props.insert("kind".into(), json!({"const": kind}));
    props.insert(
        "metadata".into(),
        json!({"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 253,
                "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}}}}),
    );
    // The envelope is required besides what the CRD requires (`spec`, usually).
    let mut required = vec![json!("apiVersion"), json!("kind"), json!("metadata")];
    required.extend(s["required"].as_array().cloned().unwrap_or_default());
    s["required"] = Value::Array(required);
    s
}

fn standardize(v: &mut Value) {
    let Value::Object(o) = v else { return };
    if o.remove("nullable") == Some(Value::Bool(true)) {
        if let Some(t) = o.get("type").cloned() {
            o.insert("type".into(), json!([t, "null"]));
        }
        if let Some(Value::Array(e)) = o.get_mut("enum") {
            e.push(Value::Null);
        }
    }
    if o.get("x-kubernetes-list-type") == Some(&json!("set")) {
        o.insert("uniqueItems".into(), Value::Bool(true));
    }
    if o.contains_key("properties") && !o.contains_key("additionalProperties") {
        o.insert("additionalProperties".into(), Value::Bool(false));
    }
    for key in ["properties"] {
        if let Some(Value::Object(props)) = o.get_mut(key) {
            props.values_mut().for_each(standardize);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = o.get_mut(key) {
            standardize(child);
        }
    }
}

/// Fills absent fields that have a schema `default`, as the API server does before
/// validating.
fn apply_defaults(schema: &Value, v: &mut Value) {
    let (Some(props), Value::Object(obj)) = (schema.get("properties"), &mut *v) else {
        if let (Some(items), Value::Array(list)) = (schema.get("items"), v) {
            list.iter_mut().for_each(|x| apply_defaults(items, x));
        }
        return;
    };
    for (name, child) in props.as_object().into_iter().flatten() {
        if let (None, Some(d)) = (obj.get(name), child.get("default")) {
            obj.insert(name.clone(), d.clone());
        }
        if let Some(x) = obj.get_mut(name) {
            apply_defaults(child, x);
        }
    }
}

/// JSON as a CEL value: integers are CEL `int` (as the API server converts them).
pub fn to_cel(v: &Value) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => cel::Value::Int(i),
            (None, Some(u)) => cel::Value::UInt(u),
            _ => cel::Value::Float(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(a) => cel::Value::List(Arc::new(a.iter().map(to_cel).collect())),
        Value::Object(o) => {
            let map: HashMap<cel::objects::Key, cel::Value> = o
                .iter()
                .map(|(k, v)| (cel::objects::Key::String(Arc::new(k.clone())), to_cel(v)))
                .collect();
            cel::Value::Map(cel::objects::Map { map: Arc::new(map) })
        }
    }
}

/// Evaluates one rule; `Ok(true)` when it holds.
pub fn eval(rule: &str, this: &Value, old: Option<&Value>) -> Result<bool, String> {
    let program = cel::Program::compile(rule).map_err(|e| format!("does not parse: {e}"))?;
    let mut ctx = cel::Context::default();
    ctx.add_variable_from_value("self", to_cel(this));
    if let Some(o) = old {
        ctx.add_variable_from_value("oldSelf", to_cel(o));
    }
    match program.execute(&ctx) {
        Ok(cel::Value::Bool(b)) => Ok(b),
        Ok(other) => Err(format!("returned {other:?}, not a bool")),
        Err(e) => Err(format!("evaluation error: {e}")),
    }
}

fn cel_walk(
    schema: &Value,
    v: &Value,
    old: Option<&Value>,
    path: String,
    out: &mut Vec<Violation>,
) {
    if v.is_null() {
        return;
    }
    for rule in schema["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let text = rule["rule"].as_str().unwrap_or_default();
        let transition = text.contains("oldSelf");
        if transition && old.is_none() {
            continue;
        }
        let held = eval(text, v, old);
        if held != Ok(true) {
            let field = rule["fieldPath"].as_str().unwrap_or_default();
            let at = format!("{path}{field}");
            let message = match held {
                Ok(_) => rule["message"].as_str().unwrap_or(text).to_owned(),
                Err(e) => format!("{text}: {e}"),
            };
            out.push(Violation {
                path: at.trim_start_matches('.').to_owned(),
                message,
                source: Source::Cel,
            });
        }
    }
    if let (Some(props), Value::Object(obj)) = (schema["properties"].as_object(), v) {
        for (name, child) in props {
            if let Some(x) = obj.get(name) {
                let p = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                cel_walk(child, x, old.and_then(|o| o.get(name)), p, out);
            }
        }
    }
    if let (Some(items), Value::Array(list)) = (schema.get("items"), v) {
        for (i, x) in list.iter().enumerate() {
            // Items of plain lists have no old counterpart (the server correlates only
            // map and set lists).
            cel_walk(items, x, None, format!("{path}[{i}]"), out);
        }
    }
}

/// Every CEL rule of a schema with problems: it does not parse, uses a variable other
/// than `self`/`oldSelf`, or its `fieldPath` names no field.
pub fn rule_problems(kind: &str, schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    rule_problems_at(kind, schema, "", &mut out);
    out
}

fn rule_problems_at(kind: &str, node: &Value, path: &str, out: &mut Vec<String>) {
    for rule in node["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let text = rule["rule"].as_str().unwrap_or_default();
        if rule["message"].as_str().unwrap_or_default().is_empty() {
            out.push(format!("{kind} {path}: {text}: no message"));
        }
        match cel::Program::compile(text) {
            Err(e) => out.push(format!("{kind} {path}: {text}: {e}")),
            Ok(p) => {
                let refs = p.references();
                let vars = refs.variables();
                for v in vars {
                    if v != "self" && v != "oldSelf" {
                        out.push(format!("{kind} {path}: {text}: unknown variable {v}"));
                    }
                }
            }
        }
        if let Some(f) = rule["fieldPath"].as_str() {
            let name = f.trim_start_matches('.');
            if node["properties"].get(name).is_none() {
                out.push(format!("{kind} {path}: fieldPath {f} is not a field"));
            }
        }
    }
    for (name, child) in node["properties"].as_object().into_iter().flatten() {
        let p = format!("{path}.{name}");
        rule_problems_at(kind, child, &p, out);
        if let Some(items) = child.get("items") {
            rule_problems_at(kind, items, &format!("{p}[]"), out);
        }
    }
}
