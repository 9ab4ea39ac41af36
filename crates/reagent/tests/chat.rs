//! Chat templates (`--chat`): rendered as transformers renders them (fixtures/real/chat.json,
//! made by scripts/make_chat_fixtures.py with transformers' own renderer), the template's tokens
//! marked and never replaced, and a model without a template refused in one line.

mod common;

use common::*;
use reagent::method::reagent::ReagentConfig;
use reagent::method::registry::{self, MethodSettings};
use reagent::method::{MethodKind, NoProgress};
use reagent::model::{load_causal, LoadOptions};
use reagent::{attribute, Plan, Targets};

fn fixture_json() -> serde_json::Value {
    read_json(&fixture("real/chat.json"))
}

#[test]
fn smollm2_template_renders_as_transformers_does() {
    let Some(path) = real_model("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let m = load_causal(path.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let fx = &fixture_json()["models"]["smollm2"];
    let chat = m
        .tokenizer
        .chat_template()
        .expect("SmolLM2's GGUF carries a chat template");
    assert_eq!(chat.template, fx["chat_template"].as_str().unwrap());
    assert_eq!(chat.bos_token, fx["bos_token"].as_str().unwrap());
    assert_eq!(chat.eos_token, fx["eos_token"].as_str().unwrap());
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for case in cases {
        let content = case["content"].as_str().unwrap();
        let (text, (a, b)) = m.tokenizer.apply_chat_template(content).unwrap();
        assert_eq!(text, case["text"].as_str().unwrap(), "{content:?}");
        let inside: String = text.chars().skip(a).take(b - a).collect();
        assert_eq!(inside, content);
    }
}

/// The ids a chat prompt is attributed on equal transformers' `apply_chat_template` ids (its
/// tokenizer loaded from the same GGUF file), for SmolLM2's own template and for Gemma 3's
/// instruct template (`fixtures/chat/gemma3.jinja`; the Gemma-3-270m GGUF here carries none).
#[test]
fn chat_ids_equal_transformers_apply_chat_template() {
    let fx = fixture_json();
    for (name, file) in [
        ("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
        ("gemma3", "gemma-3-270m-q4_k_m.gguf"),
    ] {
        let Some(path) = real_model(file) else {
            continue;
        };
        let mut m = load_causal(path.to_str().unwrap(), &LoadOptions::default()).unwrap();
        let fm = &fx["models"][name];
        if let Some(f) = fm["chat_template_file"].as_str() {
            let template = std::fs::read_to_string(root().join(f)).unwrap();
            assert_eq!(template, fm["chat_template"].as_str().unwrap());
            assert!(m.tokenizer.chat_template().is_none(), "{name}");
            m.tokenizer = m.tokenizer.clone().with_chat_template(template);
        }
        let cases = fm["cases"].as_array().unwrap();
        assert!(cases.len() >= 5, "{name}");
        for case in cases {
            let content = case["content"].as_str().unwrap();
            let (text, _) = m.tokenizer.apply_chat_template(content).unwrap();
            assert_eq!(text, case["text"].as_str().unwrap(), "{name}: {content:?}");
            let plan = Plan::chat(&m, content, &Targets::Text("Paris".into())).unwrap();
            let ids: Vec<u32> = plan.tokens[..plan.prompt_tokens]
                .iter()
                .map(|t| t.id)
                .collect();
            assert_eq!(ids, ids_of(&case["ids"]), "{name}: {content:?}");
        }
    }
}

#[test]
fn template_tokens_are_marked_and_never_replaced() {
    let Some(path) = real_model("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let m = load_causal(path.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let prompt = "The capital of France is";
    let plan = Plan::chat(&m, prompt, &Targets::Text(" Paris".into())).unwrap();
    let start = m.tokenizer.token_to_id("<|im_start|>").unwrap();
    // The template's special tokens are single ids, and the rendered text is not given a
    // second BOS.
    assert_eq!(plan.tokens[0].id, start);
    assert_eq!(plan.tokens.iter().filter(|t| t.id == start).count(), 3);
    let user: String = plan.tokens[..plan.prompt_tokens]
        .iter()
        .filter(|t| !t.template)
        .map(|t| t.text.as_str())
        .collect();
    assert_eq!(user, prompt);
    assert!(
        !plan.tokens[plan.prompt_tokens].template,
        "targets are not the template's"
    );
    let settings = MethodSettings {
        reagent: ReagentConfig::mask_diff(),
        ..Default::default()
    };
    for kind in [
        MethodKind::Reagent,
        MethodKind::Occlusion,
        MethodKind::InputXGradient,
    ] {
        let method = registry::build(kind, &settings, &m, None).unwrap();
        let r = attribute(&m, method.as_ref(), plan.clone(), &NoProgress).unwrap();
        let t = &r.targets[0];
        let on_template: Vec<f32> = (0..t.position)
            .filter(|&i| r.tokens[i].template)
            .map(|i| t.scores.scores[i])
            .collect();
        if kind == MethodKind::InputXGradient {
            // Gradients reach the template's embeddings too; they are reported, shown apart.
            assert!(on_template.iter().any(|s| *s != 0.0));
        } else {
            // Perturbation methods never replace them: no score.
            assert!(
                on_template.iter().all(|s| *s == 0.0),
                "{kind:?}: {on_template:?}"
            );
            assert!(t.scores.scores.iter().any(|s| *s > 0.0), "{kind:?}");
        }
    }
}

#[test]
fn a_model_without_a_template_is_refused_or_given_one() {
    let dir = fixture("models/llama_tied");
    let m = load_causal(dir.to_str().unwrap(), &LoadOptions::default()).unwrap();
    assert!(m.tokenizer.chat_template().is_none());
    let err = Plan::chat(&m, "The cat sat on the", &Targets::Text(" mat".into()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("carry no chat template"), "{err}");
    assert!(!err.contains('\n'));
    let mut m = m;
    m.tokenizer = m
        .tokenizer
        .clone()
        .with_chat_template("<|im_start|>user\n{{ messages[0]['content'] | trim }}<|im_end|>\n{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}".into());
    let plan = Plan::chat(&m, "  The cat sat on the  ", &Targets::Text(" mat".into())).unwrap();
    // A template given later still has the BOS text the tokenizer's files declare.
    assert_eq!(
        m.tokenizer.chat_template().unwrap().bos_token,
        "<|im_start|>"
    );
    // `| trim` applied: the content span holds the trimmed text.
    let user: String = plan.tokens[..plan.prompt_tokens]
        .iter()
        .filter(|t| !t.template)
        .map(|t| t.text.as_str())
        .collect();
    assert_eq!(user.trim(), "The cat sat on the");
    // A template that fails is one line.
    m.tokenizer = m
        .tokenizer
        .clone()
        .with_chat_template("{{ raise_exception('no system role here') }}".into());
    let err = Plan::chat(&m, "x", &Targets::Text(" y".into()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no system role here"), "{err}");
}
