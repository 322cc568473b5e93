//! serval's CRDs on a real kube-apiserver: each is accepted by server-side apply and
//! becomes Established, every example manifest is accepted, `kubectl explain` shows
//! each kind and its fields, and every validation the CRDs carry refuses a bad object
//! with a message that names the field:
//!
//! - each `enum`, `minimum`, `maximum`, `format`, `anyOf`, `pattern`, `minLength`,
//!   `maxLength`, `maxItems`, `required` and set list found by walking the schemas
//!   gets one invalid value, put into a sample that has the field (a validation no
//!   sample reaches, or a keyword the walk does not know, fails the test);
//! - each CEL rule is broken by a case of `tests/crds/cases.rs` (the test there fails
//!   when a rule has none), the same cases the local evaluator of `tests/crds.rs` runs.
//!
//! Each refusal is also checked against the local evaluator (`tests/crds/validate.rs`):
//! the server and the local check must refuse the same objects at the same fields.
//!
//! The few hundred invalid objects go through one kube client as dry-run server-side
//! applies with strict field validation (the request `kubectl apply --server-side
//! --dry-run=server` makes), not one kubectl process each; kubectl itself applies the
//! CRDs and the examples and shows one refusal as a person sees it.

#[path = "crds/validate.rs"]
mod validate;

#[path = "crds/cases.rs"]
mod cases;

mod kube_support;

use std::collections::BTreeMap;
use std::time::Instant;

use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, ValidationDirective,
};
use serde_json::{json, Value};
use serval_integration::kube::ApiServer;
use serval_integration::scenario;

use validate::{Crds, Source};

/// One step into a document.
#[derive(Clone, Debug)]
enum Step {
    Field(String),
    Index(usize),
    Key(String),
}

/// One step into a schema.
#[derive(Clone, Debug)]
enum SchemaStep {
    Field(String),
    Items,
    Values,
}

/// Schema keywords that shape or document a field but refuse nothing by themselves.
const SHAPE: [&str; 8] = [
    "type",
    "description",
    "title",
    "nullable",
    "default",
    "properties",
    "items",
    "additionalProperties",
];

/// One validation of a schema: where, which keyword, the node that carries it.
struct Validation {
    kind: String,
    at: Vec<SchemaStep>,
    keyword: String,
    node: Value,
    /// For `required`: which of the names.
    field: Option<String>,
}

impl Validation {
    fn label(&self) -> String {
        match &self.field {
            Some(f) => format!(
                "{} {} {}: {f}",
                self.kind,
                schema_label(&self.at),
                self.keyword
            ),
            None => format!(
                "{} {} {}: {}",
                self.kind,
                schema_label(&self.at),
                self.keyword,
                self.node[&self.keyword]
            ),
        }
    }
}

fn schema_label(at: &[SchemaStep]) -> String {
    let mut s = String::new();
    for step in at {
        match step {
            SchemaStep::Field(n) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(n);
            }
            SchemaStep::Items => s.push_str("[]"),
            SchemaStep::Values => s.push_str("{}"),
        }
    }
    s
}

/// Every validation of `schema`, CEL rules aside (those have their cases).
fn validations(kind: &str, schema: &Value, at: Vec<SchemaStep>, out: &mut Vec<Validation>) {
    let Some(node) = schema.as_object() else {
        return;
    };
    for key in node.keys() {
        if SHAPE.contains(&key.as_str()) || key == "x-kubernetes-validations" {
            continue;
        }
        if key == "x-kubernetes-list-type" && node[key] == "atomic" {
            continue;
        }
        let fields: Vec<Option<String>> = match node[key].as_array() {
            Some(names) if key == "required" => names
                .iter()
                .map(|n| n.as_str().map(str::to_owned))
                .collect(),
            _ => vec![None],
        };
        for field in fields {
            out.push(Validation {
                kind: kind.to_owned(),
                at: at.clone(),
                keyword: key.clone(),
                node: schema.clone(),
                field,
            });
        }
    }
    for (name, child) in node
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let mut p = at.clone();
        p.push(SchemaStep::Field(name.clone()));
        validations(kind, child, p, out);
    }
    if let Some(items) = node.get("items") {
        let mut p = at.clone();
        p.push(SchemaStep::Items);
        validations(kind, items, p, out);
    }
    if let Some(values) = node.get("additionalProperties").filter(|v| v.is_object()) {
        let mut p = at;
        p.push(SchemaStep::Values);
        validations(kind, values, p, out);
    }
}

/// Where `at` is in `doc`, through the first list item or map value that has the rest.
fn locate(doc: &Value, at: &[SchemaStep]) -> Option<Vec<Step>> {
    let Some((first, rest)) = at.split_first() else {
        return Some(Vec::new());
    };
    match first {
        SchemaStep::Field(n) => {
            let child = doc.get(n).filter(|c| !c.is_null())?;
            let mut out = vec![Step::Field(n.clone())];
            out.extend(locate(child, rest)?);
            Some(out)
        }
        SchemaStep::Items => doc.as_array()?.iter().enumerate().find_map(|(i, c)| {
            let mut out = vec![Step::Index(i)];
            out.extend(locate(c, rest)?);
            Some(out)
        }),
        SchemaStep::Values => doc.as_object()?.iter().find_map(|(k, c)| {
            let mut out = vec![Step::Key(k.clone())];
            out.extend(locate(c, rest)?);
            Some(out)
        }),
    }
}

fn get_mut<'a>(doc: &'a mut Value, at: &[Step]) -> &'a mut Value {
    at.iter().fold(doc, |node, step| match step {
        Step::Field(n) | Step::Key(n) => &mut node[n.as_str()],
        Step::Index(i) => &mut node[*i],
    })
}

/// The path an API server error names for `at`: `spec.exportV4[0].cidr`; a map value
/// is named by its map (the server and the local check spell keys differently).
fn error_path(at: &[Step]) -> String {
    let mut s = String::new();
    for step in at {
        match step {
            Step::Field(n) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(n);
            }
            Step::Index(i) => s.push_str(&format!("[{i}]")),
            Step::Key(_) => break,
        }
    }
    s
}

/// A value the format refuses.
fn bad_format(format: &str) -> Option<&'static str> {
    Some(match format {
        "ipv4" => "192.0.2.300",
        "ipv6" => "2001:db8::g",
        "cidr" => "192.0.2.0/33",
        "date-time" => "yesterday",
        _ => return None,
    })
}

/// An object that breaks one validation.
struct Mutation {
    label: String,
    doc: Value,
    /// The field the refusal must name.
    path: String,
    status: bool,
}

/// The mutation of `v` made on the first sample that has the field, or why none can
/// be made.
fn mutate(v: &Validation, samples: &[Value]) -> Result<Mutation, String> {
    let label = v.label();
    let (base, at) = samples
        .iter()
        .filter(|d| d["kind"] == v.kind.as_str())
        .find_map(|d| locate(d, &v.at).map(|at| (d, at)))
        .ok_or_else(|| {
            format!("{label}: no sample has this field; add one to extra_samples in tests/crds/cases.rs")
        })?;
    let mut doc = base.clone();
    let mut path = error_path(&at);
    let kw = &v.node[&v.keyword];
    let target = get_mut(&mut doc, &at);
    let bad: Value = match v.keyword.as_str() {
        "enum" => json!("NotOneOfTheAllowedValues"),
        "minimum" => match (kw.as_i64(), kw.as_f64()) {
            (Some(m), _) => json!(m - 1),
            (None, Some(m)) => json!(m - 1.0),
            _ => return Err(format!("{label}: not a number")),
        },
        "maximum" => match (kw.as_u64(), kw.as_f64()) {
            (Some(m), _) => json!(m + 1),
            (None, Some(m)) => json!(m + 1.0),
            _ => return Err(format!("{label}: not a number")),
        },
        "format" => match kw.as_str().and_then(bad_format) {
            Some(s) => json!(s),
            None => {
                return Err(format!(
                    "{label}: the test knows no invalid value for this format"
                ))
            }
        },
        "anyOf" => {
            let simple = kw.as_array().is_some_and(|branches| {
                branches.iter().all(|b| {
                    b.as_object()
                        .is_some_and(|o| o.keys().all(|k| k == "format" || k == "pattern"))
                })
            });
            if !simple {
                return Err(format!(
                    "{label}: only anyOf of formats and patterns is known"
                ));
            }
            json!("not-an-address")
        }
        "pattern" => {
            let re = regex::Regex::new(kw.as_str().unwrap_or_default())
                .map_err(|e| format!("{label}: {e}"))?;
            let bad = "!";
            if re.is_match(bad) {
                return Err(format!("{label}: the pattern takes {bad:?}"));
            }
            json!(bad)
        }
        "maxLength" => {
            let n = kw
                .as_u64()
                .ok_or_else(|| format!("{label}: not a length"))?;
            json!("a".repeat(usize::try_from(n).unwrap_or(usize::MAX) + 1))
        }
        "minLength" => {
            let n = kw
                .as_u64()
                .ok_or_else(|| format!("{label}: not a length"))?;
            if n != 1 {
                return Err(format!("{label}: only minLength 1 is known"));
            }
            json!("")
        }
        "maxItems" => {
            let n = kw.as_u64().ok_or_else(|| format!("{label}: not a count"))?;
            let first = target
                .as_array()
                .and_then(|a| a.first())
                .cloned()
                .ok_or_else(|| format!("{label}: the sample's list is empty"))?;
            Value::Array(vec![first; usize::try_from(n).unwrap_or(0) + 1])
        }
        "x-kubernetes-list-type" if kw == "set" => {
            let first = target
                .as_array()
                .and_then(|a| a.first())
                .cloned()
                .ok_or_else(|| format!("{label}: the sample's list is empty"))?;
            json!([first.clone(), first])
        }
        "required" => {
            let name = v
                .field
                .as_deref()
                .ok_or_else(|| format!("{label}: no name"))?;
            target
                .as_object_mut()
                .ok_or_else(|| format!("{label}: not an object"))?
                .remove(name);
            path = if path.is_empty() {
                name.to_owned()
            } else {
                format!("{path}.{name}")
            };
            return Ok(Mutation {
                label,
                status: matches!(at.first(), Some(Step::Field(f)) if f == "status"),
                doc,
                path,
            });
        }
        _ => {
            return Err(format!(
                "{label}: the test does not know how to break this keyword"
            ))
        }
    };
    *target = bad;
    Ok(Mutation {
        label,
        status: matches!(at.first(), Some(Step::Field(f)) if f == "status"),
        doc,
        path,
    })
}

/// Whether a refusal at `got` names the field `want` (the same field, or one holding
/// it, or one inside it: `required` is reported at the object that lacks the field by
/// the local check, at the field by the server).
fn names(got: &str, want: &str) -> bool {
    let within = |inner: &str, outer: &str| {
        outer.is_empty()
            || inner == outer
            || inner.starts_with(&format!("{outer}."))
            || inner.starts_with(&format!("{outer}["))
    };
    within(got, want) || within(want, got)
}

/// The server's answer to a dry-run server-side apply of `doc` (of its status when
/// `status`): `Ok` when accepted, else the error message.
async fn dry_apply(
    client: &kube::Client,
    resources: &BTreeMap<String, ApiResource>,
    doc: &Value,
    status: bool,
) -> Result<(), String> {
    let kind = doc["kind"].as_str().unwrap_or_default();
    let name = doc["metadata"]["name"].as_str().unwrap_or_default();
    let ar = resources
        .get(kind)
        .unwrap_or_else(|| panic!("no CRD for kind {kind}"));
    let api: Api<DynamicObject> = Api::all_with(client.clone(), ar);
    let pp = PatchParams {
        dry_run: true,
        force: true,
        field_manager: Some("serval-test".into()),
        field_validation: Some(ValidationDirective::Strict),
    };
    let patch = Patch::Apply(doc);
    let res = if status {
        api.patch_status(name, &pp, &patch).await
    } else {
        api.patch(name, &pp, &patch).await
    };
    match res {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 422 || s.code == 400 => Err(s.message.clone()),
        // Server-side apply turns the object into its typed form before validating,
        // and answers a duplicate in a `set` list, or (with strict field validation) an
        // unknown field, with a 500 that names the field (a create or update answers
        // 422 "Duplicate value" or 400 "unknown field").
        Err(kube::Error::Api(s))
            if s.code == 500 && s.message.starts_with("failed to create typed patch object") =>
        {
            Err(s.message.clone())
        }
        Err(e) => panic!("{kind} {name}: the server did not judge the object: {e}"),
    }
}

/// kind → its API resource, from the CRD files.
fn api_resources() -> BTreeMap<String, ApiResource> {
    let mut out = BTreeMap::new();
    for f in kube_support::yaml_files(&kube_support::crd_dir()) {
        for crd in kube_support::documents(&f) {
            let kind = crd["spec"]["names"]["kind"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let plural = crd["spec"]["names"]["plural"].as_str().unwrap_or_default();
            let gvk = GroupVersionKind::gvk(
                crd["spec"]["group"].as_str().unwrap_or_default(),
                crd["spec"]["versions"][0]["name"]
                    .as_str()
                    .unwrap_or_default(),
                &kind,
            );
            out.insert(kind, ApiResource::from_gvk_with_plural(&gvk, plural));
        }
    }
    out
}

/// What the local evaluator says of `doc` at `path`.
fn local_refusal(crds: &Crds, doc: &Value, old: Option<&Value>, path: &str) -> Option<String> {
    crds.check(doc, old)
        .into_iter()
        .find(|v| names(&v.path, path))
        .map(|v| v.to_string())
}

#[test]
fn crds_on_a_real_api_server() {
    scenario("kube-crds", |dir| {
        let t0 = Instant::now();
        let api = ApiServer::start(dir.path())?;
        let started = t0.elapsed();

        // 1. The CRDs: server-side apply, Established.
        kube_support::install_crds(&api)?;
        let listed = api.kubectl(&["get", "crd", "-o", "name"])?;
        for name in kube_support::crd_names() {
            assert!(
                listed.contains(&format!(
                    "customresourcedefinition.apiextensions.k8s.io/{name}"
                )),
                "{name} not installed: {listed}"
            );
        }
        let established = t0.elapsed();

        let crds = validate::load(&kube_support::crd_dir());
        let resources = api_resources();
        let samples = cases::samples();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let client = runtime.block_on(kube_support::admin_client(&api));
        let mut failures: Vec<String> = Vec::new();

        // 2. Every sample is accepted as it is (so a refusal below is the mutation's).
        for doc in &samples {
            if let Err(e) = runtime.block_on(dry_apply(&client, &resources, doc, false)) {
                failures.push(format!(
                    "sample {} {} refused: {e}",
                    doc["kind"], doc["metadata"]["name"]
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));

        // 3. One invalid value per schema validation: refused by the server and by the
        //    local check, at the field.
        let mut all = Vec::new();
        for (kind, (_, schema)) in &crds.by_kind {
            validations(kind, schema, Vec::new(), &mut all);
        }
        let mut status_mutations = Vec::new();
        let mut checked = 0;
        for v in &all {
            let m = match mutate(v, &samples) {
                Ok(m) => m,
                Err(e) => {
                    failures.push(e);
                    continue;
                }
            };
            if local_refusal(&crds, &m.doc, None, &m.path).is_none() {
                failures.push(format!(
                    "{}: the local check takes {} (at {})",
                    m.label, m.doc, m.path
                ));
            }
            if m.status {
                status_mutations.push(m);
                continue;
            }
            checked += 1;
            match runtime.block_on(dry_apply(&client, &resources, &m.doc, false)) {
                Ok(()) => failures.push(format!("{}: the server accepted it", m.label)),
                Err(msg) if !msg.contains(&m.path) => failures.push(format!(
                    "{}: the refusal does not name {}: {msg}",
                    m.label, m.path
                )),
                Err(_) => {}
            }
        }

        // 4. The CEL cases (and the other hand-written ones) that tests/crds.rs runs
        //    locally: refused by the server at the same field, with the rule's message.
        let invalid = cases::invalid();
        for case in &invalid {
            let doc = case.doc();
            let local: Vec<String> = crds
                .check(&doc, None)
                .into_iter()
                .filter(|v| v.path == case.path && v.source == case.source)
                .map(|v| v.message)
                .collect();
            match runtime.block_on(dry_apply(&client, &resources, &doc, false)) {
                Ok(()) => failures.push(format!("{}: the server accepted it", case.describe())),
                Err(msg) => {
                    if !case.path.is_empty() && !msg.contains(&case.path) {
                        failures.push(format!(
                            "{}: the refusal does not name {}: {msg}",
                            case.describe(),
                            case.path
                        ));
                    }
                    if case.source == Source::Cel && !local.iter().any(|m| msg.contains(m.as_str()))
                    {
                        failures.push(format!("{}: the server refused it, but not with the rule the local check names ({local:?}): {msg}", case.describe()));
                    }
                }
            }
        }
        let validated = t0.elapsed();

        // 5. A refusal as kubectl shows it.
        let mut peer = cases::sample("BGPPeer");
        peer["spec"]["peerIP"] = json!("10.0.0.300");
        let refused = kube_support::rejection(
            "a BGPPeer with peerIP 10.0.0.300",
            api.kubectl_stdin(&["apply", "--server-side", "-f", "-"], &peer.to_string()),
        );
        assert!(
            refused.contains("The BGPPeer \"rack-r1-tor\" is invalid")
                && refused.contains("spec.peerIP: Invalid value: \"10.0.0.300\""),
            "{refused}"
        );

        // 6. Every example manifest, applied for real.
        let examples = kube_support::root().join("examples/resources");
        api.kubectl(&[
            "apply",
            "--server-side",
            "--field-manager=serval-test",
            "-f",
            &examples.display().to_string(),
        ])?;
        let mut example_count = 0;
        for f in kube_support::yaml_files(&examples) {
            for doc in kube_support::documents(&f) {
                let kind = doc["kind"].as_str().unwrap_or_default();
                let name = doc["metadata"]["name"].as_str().unwrap_or_default();
                let plural = &resources[kind].plural;
                api.kubectl(&["get", &format!("{plural}.serval.dev"), name, "-o", "name"])?;
                example_count += 1;
            }
        }

        // 7. Transition rules: a stored object whose immutable field changes is refused;
        //    the rest of it may change.
        for case in cases::invalid_updates() {
            let before = case.doc_before();
            api.kubectl_stdin(
                &[
                    "apply",
                    "--server-side",
                    "--field-manager=serval-test",
                    "-f",
                    "-",
                ],
                &before.to_string(),
            )?;
            let doc = case.doc();
            let local = local_refusal(&crds, &doc, Some(&before), &case.path);
            if local.is_none() {
                failures.push(format!(
                    "{}: the local check takes the update",
                    case.describe()
                ));
            }
            match runtime.block_on(dry_apply(&client, &resources, &doc, false)) {
                Ok(()) => failures.push(format!(
                    "{}: the server accepted the update",
                    case.describe()
                )),
                Err(msg) if !msg.contains(&case.path) => failures.push(format!(
                    "{}: the refusal does not name {}: {msg}",
                    case.describe(),
                    case.path
                )),
                Err(_) => {}
            }
        }
        let mut pool = cases::sample("IPPool");
        pool["spec"]["natOutgoing"] = json!(false);
        if let Err(e) = runtime.block_on(dry_apply(&client, &resources, &pool, false)) {
            failures.push(format!("changing an IPPool's natOutgoing was refused: {e}"));
        }

        // 8. The status a node's agent reports: the valid one is taken, each invalid one
        //    refused, on the status subresource of a stored object.
        for doc in samples.iter().filter(|d| d.get("status").is_some()) {
            api.kubectl_stdin(
                &[
                    "apply",
                    "--server-side",
                    "--field-manager=serval-test",
                    "-f",
                    "-",
                ],
                &doc.to_string(),
            )?;
            if let Err(e) = runtime.block_on(dry_apply(&client, &resources, doc, true)) {
                failures.push(format!(
                    "the status of {} {} was refused: {e}",
                    doc["kind"], doc["metadata"]["name"]
                ));
            }
        }
        for m in &status_mutations {
            checked += 1;
            match runtime.block_on(dry_apply(&client, &resources, &m.doc, true)) {
                Ok(()) => failures.push(format!("{}: the server accepted the status", m.label)),
                Err(msg) if !msg.contains(&m.path) => failures.push(format!(
                    "{}: the refusal does not name {}: {msg}",
                    m.label, m.path
                )),
                Err(_) => {}
            }
        }
        let updated = t0.elapsed();

        // 9. kubectl explain: each kind, and a field inside its spec, with the
        //    descriptions the CRDs carry (compared with whitespace collapsed: explain
        //    wraps lines).
        let words = |s: &str, n: usize| s.split_whitespace().take(n).collect::<Vec<_>>().join(" ");
        for (kind, ar) in &resources {
            let resource = format!("{}.serval.dev", ar.plural);
            let out = words(&kube_support::wait_explain(&api, &resource)?, usize::MAX);
            let (_, schema) = &crds.by_kind[kind];
            let description = words(schema["description"].as_str().unwrap_or_default(), 6);
            if !out.contains(&format!("KIND: {kind}")) || !out.contains(&description) {
                failures.push(format!(
                    "kubectl explain {resource}: want {kind}, {description:?}:\n{out}"
                ));
            }
            let spec = &schema["properties"]["spec"]["properties"];
            let (field, field_schema) = spec
                .as_object()
                .and_then(|o| o.iter().next())
                .unwrap_or_else(|| panic!("{kind} has no spec fields"));
            let nested = format!("{resource}.spec.{field}");
            let out = words(&api.kubectl(&["explain", &nested])?, usize::MAX);
            let d = words(field_schema["description"].as_str().unwrap_or_default(), 6);
            if !out.contains(&format!("FIELD: {field}")) || !out.contains(&d) {
                failures.push(format!("kubectl explain {nested}: want {d:?}:\n{out}"));
            }
        }
        let peer_ip = api.kubectl(&["explain", "bgppeers.spec.peerIP"])?;
        assert!(peer_ip.contains("IP:PORT"), "{peer_ip}");
        let explained = t0.elapsed();

        eprintln!(
            "kube-apiserver up {started:?}; CRDs Established {established:?}; {} validations \
             and {} cases refused by {validated:?}; {example_count} examples, updates and \
             statuses by {updated:?}; explain by {explained:?}",
            checked,
            invalid.len(),
        );
        assert!(
            failures.is_empty(),
            "{} failures:\n{}",
            failures.len(),
            failures.join("\n")
        );
        assert!(
            checked >= 150,
            "only {checked} validations were found in the CRDs"
        );
        Ok(())
    });
}
