//! The attribution pipeline: tokenize a prompt, fix the targets (given text, or greedy
//! generation), run a method on each target with the tokens before it as context, and collect
//! an [`AttributionResult`].
//!
//! Each target token is attributed over the prompt and the target tokens before it, as inseq
//! does for decoder-only models (forced decoding when the target text is given).

use std::time::Instant;

use crate::method::{check_requirements, Attributor, Goal, Progress, TargetScores, Units};
use crate::model::LoadedModel;
use crate::result::{
    segment, AttributionResult, Contrast, Provenance, TargetAttribution, Token, Unit, Word,
    WordAggregation, WordScores,
};
use crate::{Error, Result};

/// What to attribute after the prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    /// Forced decoding of this text (it must start at a token boundary).
    Text(String),
    /// The model's greedy continuation of at most this many tokens (stops at EOS).
    Generate(usize),
}

/// Progress of a whole job: which target is being attributed, then the method's steps.
pub trait JobProgress: Progress {
    /// Target `index` of `total` (its text) starts.
    fn target(&self, _index: usize, _total: usize, _text: &str) {}
}

impl JobProgress for crate::method::NoProgress {}

/// Tokenized prompt and targets, ready to attribute.
#[derive(Debug, Clone)]
pub struct Plan {
    pub text: String,
    pub tokens: Vec<Token>,
    pub prompt_tokens: usize,
    pub mode: &'static str,
    /// Contrastive attribution: one contrast token per target (see [`Plan::with_contrast`]).
    pub contrast: Option<Vec<Token>>,
    /// What one feature is (see [`Plan::with_units`]); tokens by default.
    pub unit: Unit,
    /// With a unit other than tokens: the units, as runs of `tokens`.
    pub units: Vec<Word>,
}

impl Plan {
    /// Tokenize `prompt` (with the model's special tokens, e.g. BOS) and fix the targets.
    pub fn new(model: &LoadedModel, prompt: &str, targets: &Targets) -> Result<Self> {
        Self::encoded(model, prompt, true, targets)
    }

    /// The prompt as one user turn of the model's chat template, with the assistant's turn
    /// opened (see [`crate::Tokenizer::apply_chat_template`]); the template's tokens are marked
    /// `template` and never replaced. The rendered text is tokenized as it is (its BOS, if any,
    /// comes from the template).
    pub fn chat(model: &LoadedModel, prompt: &str, targets: &Targets) -> Result<Self> {
        if prompt.trim().is_empty() {
            return Err(Error::input("the prompt is empty"));
        }
        let (text, (a, b)) = model.tokenizer.apply_chat_template(prompt)?;
        let mut plan = Self::encoded(model, &text, false, targets)?;
        let chars: Vec<char> = plan.text.chars().collect();
        for t in &mut plan.tokens[..plan.prompt_tokens] {
            let anchor = (t.start..t.end.min(chars.len()))
                .find(|&c| !chars[c].is_whitespace())
                .unwrap_or(t.start);
            t.template = t.special || t.start >= t.end || !(a <= anchor && anchor < b);
        }
        if plan.tokens[..plan.prompt_tokens].iter().all(|t| t.template) {
            return Err(Error::input(
                "the chat template left no token of the prompt",
            ));
        }
        Ok(plan)
    }

    fn encoded(
        model: &LoadedModel,
        prompt: &str,
        add_special: bool,
        targets: &Targets,
    ) -> Result<Self> {
        if prompt.trim().is_empty() {
            return Err(Error::input("the prompt is empty"));
        }
        let tok = &model.tokenizer;
        let enc = tok.encode(prompt, add_special)?;
        if enc.ids.is_empty() {
            return Err(Error::input("the prompt encodes to no tokens"));
        }
        let max = model.model.info().max_positions;
        let special = tok.special_ids();
        let mk = |id: u32, (start, end): (usize, usize)| Token {
            id,
            text: tok.token_text(id),
            start,
            end,
            special: special.binary_search(&id).is_ok() || start == end,
            template: false,
        };
        let mut tokens: Vec<Token> = enc
            .ids
            .iter()
            .zip(&enc.offsets)
            .map(|(&id, &o)| mk(id, o))
            .collect();
        let prompt_tokens = tokens.len();
        match targets {
            Targets::Text(target) => {
                if target.is_empty() {
                    return Err(Error::input("the target text is empty"));
                }
                let text = format!("{prompt}{target}");
                let full = tok.encode(&text, add_special)?;
                if full.ids.len() <= prompt_tokens || full.ids[..prompt_tokens] != enc.ids[..] {
                    return Err(Error::input(format!(
                        "the tokenizer cannot split {:?} + {:?} at the boundary: the prompt's last token merges with the \
                         target's first. Move the space to the start of the target (e.g. \"The capital of France is\" + \" Paris\")",
                        prompt, target
                    )));
                }
                let n = full.ids.len();
                if n - 1 > max {
                    return Err(Error::input(format!(
                        "prompt and target need a context of {} tokens, more than the model's maximum of {max}",
                        n - 1
                    )));
                }
                for i in prompt_tokens..n {
                    tokens.push(mk(full.ids[i], full.offsets[i]));
                }
                Ok(Plan {
                    text,
                    tokens,
                    prompt_tokens,
                    mode: "forced",
                    contrast: None,
                    unit: Unit::Token,
                    units: Vec::new(),
                })
            }
            Targets::Generate(n) => {
                if *n == 0 {
                    return Err(Error::input("max_new_tokens must be at least 1"));
                }
                if prompt_tokens.saturating_add(n - 1) > max {
                    return Err(Error::input(format!(
                        "the prompt ({prompt_tokens} tokens) plus {n} new tokens exceed the model's maximum context of {max}"
                    )));
                }
                let mut ids = enc.ids.clone();
                let eos = &model.model.info().eos_token_ids;
                let mut generated = Vec::new();
                for _ in 0..*n {
                    let lp = model
                        .model
                        .next_token_log_probs(std::slice::from_ref(&ids))?;
                    let next = lp.squeeze(0)?.argmax(0)?.to_scalar::<u32>()?;
                    if eos.contains(&next) {
                        break;
                    }
                    ids.push(next);
                    generated.push(next);
                }
                if generated.is_empty() {
                    return Err(Error::input(
                        "the model's greedy continuation is end-of-sequence right away: nothing to attribute",
                    ));
                }
                let mut text = prompt.to_string();
                let base = prompt.chars().count();
                let mut done = 0;
                for i in 0..generated.len() {
                    let upto = tok.decode(&generated[..=i])?;
                    let len = upto.chars().count();
                    tokens.push(mk(generated[i], (base + done, base + len.max(done))));
                    done = len.max(done);
                }
                text.push_str(&tok.decode(&generated)?);
                Ok(Plan {
                    text,
                    tokens,
                    prompt_tokens,
                    mode: "generated",
                    contrast: None,
                    unit: Unit::Token,
                    units: Vec::new(),
                })
            }
        }
    }
}

impl Plan {
    /// Attribute units larger than a token: words, sentences or given character spans of the
    /// prompt (see [`crate::result::segment`]). ReAGent and occlusion then replace each unit as
    /// one feature (a context of 40 sentences is 40 features); the other methods' token scores
    /// are summed over each unit. The units and their scores are the result's `words`.
    pub fn with_units(mut self, unit: Unit) -> Result<Self> {
        if unit == Unit::Token {
            self.unit = unit;
            self.units.clear();
            return Ok(self);
        }
        if let Unit::Spans(spans) = &unit {
            // Spans are of the prompt: the text before the first target.
            let prompt_chars = self
                .tokens
                .get(self.prompt_tokens)
                .map_or(self.text.chars().count(), |t| t.start);
            if let Some(&(a, b)) = spans.iter().find(|&&(_, b)| b > prompt_chars) {
                return Err(Error::input(format!(
                    "unit span [{a}, {b}) reaches past the prompt's {prompt_chars} characters"
                )));
            }
        }
        self.units = segment(&self.text, &self.tokens, &unit)?;
        if !self.units.iter().any(|w| w.tokens.0 < self.prompt_tokens) {
            return Err(Error::input(format!(
                "the prompt has no {} to attribute",
                unit.name()
            )));
        }
        self.unit = unit;
        Ok(self)
    }

    /// The units of the context before token `pos`, cut at `pos`.
    fn units_before(&self, pos: usize) -> Result<Option<Units>> {
        if self.unit == Unit::Token {
            // A chat template's tokens are never replaced: the other tokens are the units.
            if !self.tokens[..pos].iter().any(|t| t.template) {
                return Ok(None);
            }
            let groups = (0..pos)
                .filter(|&i| !self.tokens[i].template)
                .map(|i| vec![i])
                .collect();
            return Units::new(groups, pos).map(Some);
        }
        let groups = self
            .units
            .iter()
            .filter(|w| w.tokens.0 < pos)
            .map(|w| (w.tokens.0..w.tokens.1.min(pos)).collect())
            .collect();
        Units::new(groups, pos).map(Some)
    }

    /// Attribute `p(target) - p(contrast)` instead of `p(target)`: `contrast` continues the
    /// prompt as the targets do, and its tokens pair with the targets one to one (the k-th
    /// target against the k-th contrast token, both after the same context), as inseq's
    /// `contrast_targets`.
    pub fn with_contrast(mut self, model: &LoadedModel, contrast: &str) -> Result<Self> {
        if contrast.is_empty() {
            return Err(Error::input("the contrast text is empty"));
        }
        let tok = &model.tokenizer;
        // Token offsets count characters: the prompt is the text before the first target's.
        let chars = self
            .tokens
            .get(self.prompt_tokens)
            .map(|t| t.start)
            .unwrap_or(usize::MAX);
        let prompt: String = self.text.chars().take(chars).collect();
        let prompt_ids: Vec<u32> = self.tokens[..self.prompt_tokens]
            .iter()
            .map(|t| t.id)
            .collect();
        // A chat plan's text carries its own special tokens.
        let add_special = !self.tokens.iter().any(|t| t.template);
        let full = tok.encode(&format!("{prompt}{contrast}"), add_special)?;
        if full.ids.len() <= self.prompt_tokens || full.ids[..self.prompt_tokens] != prompt_ids[..]
        {
            return Err(Error::input(format!(
                "the tokenizer cannot split the prompt and the contrast {contrast:?} at the boundary; \
                 start the contrast with a space (e.g. \" Lyon\")"
            )));
        }
        let ids = &full.ids[self.prompt_tokens..];
        let n_targets = self.tokens.len() - self.prompt_tokens;
        if ids.len() != n_targets {
            return Err(Error::input(format!(
                "the contrast {contrast:?} is {} tokens and the target {n_targets}; they must pair one to one",
                ids.len()
            )));
        }
        let offset = prompt.chars().count();
        self.contrast = Some(
            ids.iter()
                .zip(&full.offsets[self.prompt_tokens..])
                .map(|(&id, &(a, b))| Token {
                    id,
                    text: tok.token_text(id),
                    start: a.saturating_sub(offset),
                    end: b.saturating_sub(offset),
                    special: false,
                    template: false,
                })
                .collect(),
        );
        Ok(self)
    }
}

/// Attribute every target of `plan` with `method`.
pub fn attribute(
    model: &LoadedModel,
    method: &dyn Attributor,
    plan: Plan,
    progress: &dyn JobProgress,
) -> Result<AttributionResult> {
    check_requirements(method.kind(), method.requirements(), model.model.as_ref())?;
    let start = Instant::now();
    let ids: Vec<u32> = plan.tokens.iter().map(|t| t.id).collect();
    let n_targets = ids.len() - plan.prompt_tokens;
    let mut targets = Vec::with_capacity(n_targets);
    // With units: each target's score per unit, and whether the method replaced whole units.
    let mut unit_scores: Vec<Vec<f32>> = Vec::new();
    let mut perturbed_units = false;
    for (k, pos) in (plan.prompt_tokens..ids.len()).enumerate() {
        let t0 = Instant::now();
        let context = &ids[..pos];
        let target = ids[pos];
        if progress.cancelled() {
            return Err(Error::Cancelled);
        }
        progress.target(k, n_targets, &plan.tokens[pos].text);
        let contrast = plan.contrast.as_ref().map(|c| c[k].clone());
        let focus: Vec<u32> = std::iter::once(target)
            .chain(contrast.as_ref().map(|c| c.id))
            .collect();
        // A served model's counters start afresh for each target.
        let _ = model.model.take_backend_stats();
        let lp = model
            .model
            .next_token_log_probs_for(&[context.to_vec()], &focus)?;
        let prob = lp
            .squeeze(0)?
            .get(target as usize)?
            .to_scalar::<f32>()?
            .exp();
        // Each (context, target) has its own random stream: prompts of equal length must not
        // share their replacement masks.
        let stream = crate::util::ids_key(context, k as u64) as usize;
        let goal = Goal {
            target,
            contrast: contrast.as_ref().map(|c| c.id),
        };
        let token_scores = || -> Result<TargetScores> {
            match contrast {
                None => method.attribute(model.model.as_ref(), context, target, stream, progress),
                Some(_) => method
                    .attribute_contrastive(model.model.as_ref(), context, goal, stream, progress)
                    .ok_or_else(|| {
                        Error::input(format!(
                            "{} has no contrastive form; use reagent, occlusion or a gradient method",
                            method.kind().name()
                        ))
                    })?,
            }
        };
        let scores = match plan.units_before(pos)? {
            None => token_scores()?,
            Some(units) => {
                let native = method.attribute_units(
                    model.model.as_ref(),
                    context,
                    goal,
                    &units,
                    stream,
                    progress,
                );
                let (ts, per_unit, whole) = match native {
                    Some(r) => {
                        let us = r?;
                        let per_unit = us.scores.clone();
                        (spread_over_tokens(us, &units), per_unit, true)
                    }
                    None => {
                        let ts = token_scores()?;
                        let per_unit = units.sum(&ts.scores);
                        (ts, per_unit, false)
                    }
                };
                perturbed_units = whole;
                unit_scores.push(per_unit);
                ts
            }
        };
        let contrast = match contrast {
            None => None,
            Some(c) => {
                let p = lp.squeeze(0)?.get(c.id as usize)?.to_scalar::<f32>()?.exp();
                Some(Contrast {
                    id: c.id,
                    text: c.text,
                    prob: p,
                })
            }
        };
        if let Some(bad) = scores.scores.iter().position(|s| !s.is_finite()) {
            return Err(Error::input(format!(
                "{} produced a non-finite score at position {bad} for target {k}",
                method.kind().name()
            )));
        }
        targets.push(TargetAttribution {
            position: pos,
            id: target,
            text: plan.tokens[pos].text.clone(),
            prob,
            contrast,
            scores,
            backend: model.model.take_backend_stats(),
            wall_s: t0.elapsed().as_secs_f64(),
        });
    }
    let info = model.model.info();
    let words = (plan.unit != Unit::Token).then(|| WordScores {
        aggregation: WordAggregation::Sum,
        unit: Some(plan.unit.name().to_string()),
        perturbed: perturbed_units,
        words: plan.units.clone(),
        scores: unit_scores,
    });
    Ok(AttributionResult {
        provenance: Provenance {
            reagent_version: env!("CARGO_PKG_VERSION").to_string(),
            model: model.id.clone(),
            architecture: info.architecture.clone(),
            weights: info.weights.clone(),
            method: method.kind().name().to_string(),
            config: method.config(),
        },
        text: plan.text,
        tokens: plan.tokens,
        prompt_tokens: plan.prompt_tokens,
        target_mode: plan.mode.to_string(),
        targets,
        words,
        wall_s: start.elapsed().as_secs_f64(),
    })
}

/// Unit scores as token scores: each unit's score (and its spread and error bound) split
/// evenly over the unit's tokens, so that token scores still sum as the unit scores do;
/// tokens in no unit score 0.
fn spread_over_tokens(mut us: TargetScores, units: &Units) -> TargetScores {
    fn expand(units: &Units, v: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; units.context_len()];
        for (g, &x) in units.groups().iter().zip(v) {
            for &i in g {
                out[i] = x / g.len() as f32;
            }
        }
        out
    }
    us.scores = expand(units, &us.scores);
    us.spread = us.spread.as_deref().map(|v| expand(units, v));
    us.error_bound = us.error_bound.as_deref().map(|v| expand(units, v));
    us
}
