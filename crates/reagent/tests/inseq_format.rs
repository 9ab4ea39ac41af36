//! inseq's format (`--format inseq`): our writer against a file inseq 0.7.1 saved itself
//! (`fixtures/inseq/saved_occlusion.json`, from `scripts/make_inseq_fixtures.py`: inseq's
//! occlusion on the tiny `llama_tied` model, "The cat sat on" → " the mat"). The same job run
//! here and written by [`InseqJson`] has the same structure (class markers, keys, value types,
//! tensor names, dtypes and shapes, NaN layout) and the same numbers.

mod common;

use base64::Engine;
use common::*;
use reagent::method::registry::{self, MethodSettings};
use reagent::method::{MethodKind, NoProgress};
use reagent::render::InseqJson;
use reagent::{attribute, AttributionResult, Plan, Targets};
use serde_json::Value;

/// A base64 safetensors blob as inseq writes it: the tensor's name, dtype, shape and values.
fn decode(b64: &Value) -> (String, String, Vec<usize>, Vec<f32>) {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.as_str().expect("a tensor is a base64 string"))
        .unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let names = st.names();
    assert_eq!(names.len(), 1, "one tensor per blob");
    let name = names[0].to_string();
    let t = st.tensor(&name).unwrap();
    let data = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (name, format!("{:?}", t.dtype()), t.shape().to_vec(), data)
}

/// The JSON type of a value, with objects and arrays described recursively; tensors (base64
/// strings under `*_attributions` and `step_scores`) stand as "tensor".
fn shape_of(v: &Value, key: &str) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| {
                    let inner = if key == "step_scores" && x.is_string() {
                        "tensor".into()
                    } else {
                        shape_of(x, k)
                    };
                    (k.clone(), inner)
                })
                .collect(),
        ),
        Value::Array(a) => match a.first() {
            Some(x) => Value::Array(vec![shape_of(x, key)]),
            None => Value::Array(vec![]),
        },
        Value::String(_) if key.ends_with("_attributions") => "tensor".into(),
        Value::String(_) => "string".into(),
        Value::Number(n) if n.is_f64() => "float".into(),
        Value::Number(_) => "int".into(),
        Value::Bool(_) => "bool".into(),
        Value::Null => "null".into(),
    }
}

/// inseq's job here: occlusion on `llama_tied`, "The cat sat on" → " the mat".
fn occlusion_result() -> AttributionResult {
    let model = tiny_model("llama_tied");
    let plan = Plan::new(&model, "The cat sat on", &Targets::Text(" the mat".into())).unwrap();
    let settings = MethodSettings::default();
    let method = registry::build(MethodKind::Occlusion, &settings, &model, None).unwrap();
    attribute(&model, method.as_ref(), plan, &NoProgress).unwrap()
}

fn ours() -> Value {
    let mut buf = Vec::new();
    InseqJson.render(&[occlusion_result()], &mut buf).unwrap();
    serde_json::from_slice(&buf).unwrap()
}

#[test]
fn our_inseq_file_matches_one_inseq_wrote() {
    let theirs = read_json(&fixture("inseq/saved_occlusion.json"));
    let ours = ours();
    // The class markers inseq's loader resolves.
    assert_eq!(ours["__instance_type__"], theirs["__instance_type__"]);
    let (sa, sb) = (
        &ours["attributes"]["sequence_attributions"][0],
        &theirs["attributes"]["sequence_attributions"][0],
    );
    assert_eq!(sa["__instance_type__"], sb["__instance_type__"]);
    assert_eq!(
        sa["attributes"]["source"][0]["__instance_type__"],
        sb["attributes"]["source"][0]["__instance_type__"]
    );
    // The same keys and value types in each sequence; `info` holds every key inseq writes,
    // with the same types (ours adds the weights and reagent's version).
    assert_eq!(
        shape_of(&sa["attributes"], ""),
        shape_of(&sb["attributes"], "")
    );
    let (ia, ib) = (&ours["attributes"]["info"], &theirs["attributes"]["info"]);
    for (k, v) in ib.as_object().unwrap() {
        let mine = ia.get(k).unwrap_or_else(|| panic!("info lacks {k}"));
        if k == "attribution_args" || k == "tokenizer_name" {
            continue; // method settings and a name: their content differs by design
        }
        assert_eq!(shape_of(mine, k), shape_of(v, k), "info.{k}");
    }
    assert!(ours["attributes"]["step_attributions"].is_null());
    // The same tokens and span.
    let ids = |s: &Value, which: &str| -> Vec<u64> {
        s["attributes"][which]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["attributes"]["id"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(ids(sa, "source"), ids(sb, "source"));
    assert_eq!(ids(sa, "target"), ids(sb, "target"));
    for k in ["attr_pos_start", "attr_pos_end"] {
        assert_eq!(sa["attributes"][k], sb["attributes"][k], "{k}");
    }
    // The tensors: names, dtypes, shapes, NaN layout and values.
    let (na, da, ha, va) = decode(&sa["attributes"]["target_attributions"]);
    let (nb, db, hb, vb) = decode(&sb["attributes"]["target_attributions"]);
    assert_eq!((na, da, &ha), (nb, db, &hb));
    assert_eq!(ha.len(), 2);
    let (rows, cols) = (ha[0], ha[1]);
    let start = sa["attributes"]["attr_pos_start"].as_u64().unwrap() as usize;
    assert_eq!(cols, rows - start);
    for i in 0..rows {
        for j in 0..cols {
            let (a, b) = (va[i * cols + j], vb[i * cols + j]);
            assert_eq!(a.is_nan(), b.is_nan(), "NaN layout at [{i}, {j}]");
            assert_eq!(a.is_nan(), i >= start + j);
            if !a.is_nan() {
                assert!(
                    (a - b).abs() <= 1e-6 + 1e-3 * b.abs(),
                    "[{i}, {j}]: ours {a}, inseq {b}"
                );
            }
        }
    }
    assert!(vb.iter().any(|x| !x.is_nan() && *x > 0.0));
    let (pa, pb) = (
        decode(&sa["attributes"]["step_scores"]["probability"]),
        decode(&sb["attributes"]["step_scores"]["probability"]),
    );
    assert_eq!((&pa.0, &pa.1, &pa.2), (&pb.0, &pb.1, &pb.2));
    for (a, b) in pa.3.iter().zip(&pb.3) {
        assert!((a - b).abs() <= 1e-6 + 1e-4 * b.abs(), "p: {a} vs {b}");
    }
}

#[test]
fn targets_that_do_not_follow_the_prompt_are_refused() {
    let mut r = occlusion_result();
    r.targets.remove(0);
    let err = InseqJson.to_value(&[r]).unwrap_err().to_string();
    assert!(err.contains("follow the prompt"), "{err}");
    assert!(!err.contains('\n'));
    // A result whose tokens cannot hold its targets (a hand-edited JSON): an error, no panic.
    let mut r = occlusion_result();
    r.tokens.truncate(r.prompt_tokens + 1);
    let err = InseqJson.to_value(&[r]).unwrap_err().to_string();
    assert!(err.contains("cannot hold"), "{err}");
    let err = InseqJson.to_value(&[]).unwrap_err().to_string();
    assert!(err.contains("at least one result"), "{err}");
}
