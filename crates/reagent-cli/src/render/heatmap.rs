//! A terminal heatmap: one row per target, its context tokens shaded by score.
//!
//! With colour, each token's background runs from white (0) to red (the row's largest score).
//! Without colour (not a terminal, `NO_COLOR`, `--no-color`), each token is followed by its
//! score in brackets. Both end with the row's top tokens.

use std::io::Write;

use anyhow::Result;
use reagent::AttributionResult;

pub struct Heatmap {
    pub color: bool,
    /// Show the word view when the result has one.
    pub words: bool,
    /// How many top tokens to list per target.
    pub top: usize,
    /// Show a chat template's tokens (hidden by default).
    pub show_template: bool,
}

/// A token's text for display: control characters escaped, empty shown as ∅.
fn show(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    if out.is_empty() {
        "∅".into()
    } else {
        out
    }
}

/// Background white → red with intensity `x` in [0, 1]; black or white text for contrast.
fn shade(text: &str, x: f32) -> String {
    let x = x.clamp(0.0, 1.0);
    let (r, g, b) = (255.0, 255.0 * (1.0 - 0.85 * x), 255.0 * (1.0 - 0.85 * x));
    let fg = if x > 0.6 { "97" } else { "30" };
    format!("\x1b[48;2;{:.0};{:.0};{:.0};{fg}m{text}\x1b[0m", r, g, b)
}

impl Heatmap {
    pub fn render(&self, r: &AttributionResult, mut w: impl Write) -> Result<()> {
        let p = &r.provenance;
        let cfg = &p.config;
        let n = r.targets.len();
        let mut header = format!(
            "{} · {} · {n} target{}",
            p.model,
            p.method,
            if n == 1 { "" } else { "s" }
        );
        if let Some(sampler) = cfg["sampler"]["kind"].as_str() {
            header.push_str(&format!(" · sampler {sampler} · {} probes", cfg["probes"]));
        }
        if !cfg["seed"].is_null() {
            header.push_str(&format!(" · seed {}", cfg["seed"]));
        }
        writeln!(w, "{header}")?;
        let words = if self.words { r.words.as_ref() } else { None };
        for (k, t) in r.targets.iter().enumerate() {
            let (labels, scores): (Vec<String>, Vec<f32>) = match words {
                Some(ws) => (
                    // A word cut by the end of the context shows only its tokens inside it.
                    ws.words
                        .iter()
                        .filter(|wd| wd.tokens.0 < t.position)
                        .map(|wd| {
                            r.tokens[wd.tokens.0..wd.tokens.1.min(t.position)]
                                .iter()
                                .map(|tk| tk.text.as_str())
                                .collect()
                        })
                        .collect(),
                    ws.scores[k].clone(),
                ),
                None => {
                    // A chat template's tokens are hidden unless asked for.
                    let shown: Vec<usize> = (0..t.position)
                        .filter(|&i| self.show_template || !r.tokens[i].template)
                        .collect();
                    (
                        shown.iter().map(|&i| r.tokens[i].text.clone()).collect(),
                        shown.iter().map(|&i| t.scores.scores[i]).collect(),
                    )
                }
            };
            let mut stats = format!("p={:.4}", t.prob);
            if let Some(c) = &t.contrast {
                stats.push_str(&format!("  vs {:?} p={:.4}", c.text, c.prob));
            }
            if let (Some(s), Some(c), Some(n)) =
                (t.scores.steps, t.scores.converged_probes, t.scores.probes)
            {
                let readout = cfg["readout"].as_str().unwrap_or("reference");
                if readout != "reference" {
                    // A pooled read-out does not use convergence.
                    let rows = t.scores.forward_rows.unwrap_or(0);
                    stats.push_str(&format!(
                        "  steps {s}  read-out {readout} over {rows} scored contexts"
                    ));
                } else {
                    stats.push_str(&format!("  steps {s}  converged {c}/{n}"));
                    if c == 0 {
                        stats.push_str(" (none converged: mean of all probes)");
                    }
                }
                if let Some(r) = t.scores.replacing_ratio {
                    stats.push_str(&format!("  r={r:.4}"));
                }
            }
            if let Some(d) = t.scores.convergence_delta {
                stats.push_str(&format!("  delta {d:.2e}"));
            }
            writeln!(w)?;
            writeln!(
                w,
                "[{}/{}] target {:?}  {stats}",
                k + 1,
                r.targets.len(),
                t.text
            )?;
            let max = scores.iter().copied().fold(0f32, f32::max);
            let mut line = String::from("  ");
            for (label, &s) in labels.iter().zip(&scores) {
                if self.color {
                    line.push_str(&shade(&show(label), if max > 0.0 { s / max } else { 0.0 }));
                } else {
                    line.push_str(&format!("{}[{:.3}]", show(label), s));
                }
            }
            if self.color {
                line.push_str(&format!(" \x1b[1m→{}\x1b[0m", show(&t.text)));
            } else {
                line.push_str(&format!(" → {}", show(&t.text)));
            }
            writeln!(w, "{line}")?;
            let mut order: Vec<usize> = (0..scores.len()).collect();
            order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
            let top: Vec<String> = order
                .iter()
                .take(self.top)
                .map(|&i| format!("{:?} {:.3}", labels[i], scores[i]))
                .collect();
            writeln!(w, "  top: {}", top.join(", "))?;
        }
        Ok(())
    }
}
