//! The summary as Markdown (`summary.md`) and CSV (`summary.csv`): sinks the CLI and other
//! front ends share.

use std::path::{Path, PathBuf};

use super::stats;
use super::summary::Summary;
use crate::error::WithPath;
use crate::Result;

impl Summary {
    /// The CSV table: one row per method.
    pub fn to_csv(&self) -> String {
        let fmt = |x: Option<f64>| x.map(|v| format!("{v:.6}")).unwrap_or_default();
        let ratios: Vec<f64> = self
            .methods
            .first()
            .map(|m| m.hard.iter().map(|h| h.0).collect())
            .unwrap_or_default();
        let mut s = String::from(
            "method,examples,tokens,soft_suff,soft_comp,soft_ns,soft_nc,ln_soft_ns_vs_random,ln_soft_nc_vs_random,hard_ns_mean,hard_nc_mean,hard_ns_vs_random,hard_nc_vs_random,antecedent_top3",
        );
        for r in &ratios {
            s.push_str(&format!(",hard_ns@{r},hard_nc@{r}"));
        }
        s.push_str(",reagent_steps,reagent_converged,seconds_per_token,forward_rows_per_token,soft_ns_lo,soft_ns_hi,soft_nc_lo,soft_nc_hi,ln_soft_ns_lo,ln_soft_ns_hi,ln_soft_nc_lo,ln_soft_nc_hi,antecedent_top3_lo,antecedent_top3_hi,stability_spearman,stability_top3,hard_ns_vs_random_lo,hard_ns_vs_random_hi,hard_nc_vs_random_lo,hard_nc_vs_random_hi,aopc_suff,aopc_suff_lo,aopc_suff_hi,aopc_comp,aopc_comp_lo,aopc_comp_hi,erasure_error\n");
        for m in &self.methods {
            s.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                m.method,
                m.examples,
                m.tokens,
                fmt(m.soft_suff),
                fmt(m.soft_comp),
                fmt(m.soft_ns),
                fmt(m.soft_nc),
                fmt(self.ln_ratio(m, |x| x.soft_ns)),
                fmt(self.ln_ratio(m, |x| x.soft_nc)),
                fmt(m.hard_ns_mean),
                fmt(m.hard_nc_mean),
                fmt(self.ratio(m, |x| x.hard_ns_mean)),
                fmt(self.ratio(m, |x| x.hard_nc_mean)),
                fmt(m.antecedent_top3),
            ));
            for h in &m.hard {
                s.push_str(&format!(",{},{}", fmt(h.1), fmt(h.2)));
            }
            let lo = |c: Option<stats::Interval>| fmt(c.map(|c| c.0));
            let hi = |c: Option<stats::Interval>| fmt(c.map(|c| c.1));
            s.push_str(&format!(
                ",{},{},{:.3},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
                fmt(m.reagent_steps),
                fmt(m.reagent_converged),
                m.seconds_per_token,
                fmt(m.forward_rows),
                lo(m.soft_ns_ci),
                hi(m.soft_ns_ci),
                lo(m.soft_nc_ci),
                hi(m.soft_nc_ci),
                lo(m.ln_soft_ns_ci),
                hi(m.ln_soft_ns_ci),
                lo(m.ln_soft_nc_ci),
                hi(m.ln_soft_nc_ci),
                lo(m.antecedent_top3_ci),
                hi(m.antecedent_top3_ci),
                fmt(m.stability_spearman),
                fmt(m.stability_top3),
                lo(m.hard_ns_ratio_ci),
                hi(m.hard_ns_ratio_ci),
                lo(m.hard_nc_ratio_ci),
                hi(m.hard_nc_ratio_ci),
                fmt(m.aopc_suff),
                lo(m.aopc_suff_ci),
                hi(m.aopc_suff_ci),
                fmt(m.aopc_comp),
                lo(m.aopc_comp_ci),
                hi(m.aopc_comp_ci),
                fmt(m.erasure_error),
            ));
        }
        s
    }

    /// The Markdown report.
    pub fn to_markdown(&self, title: &str) -> String {
        let f = |x: Option<f64>| x.map(|v| format!("{v:.4}")).unwrap_or_else(|| "–".into());
        let f2 = |x: Option<f64>| x.map(|v| format!("{v:.2}")).unwrap_or_else(|| "–".into());
        let ci = |c: Option<stats::Interval>| {
            c.map(|(lo, hi)| format!(" [{lo:.2}, {hi:.2}]"))
                .unwrap_or_default()
        };
        let mut s = format!(
            "# {title}\n\n{} level; {} examples used of {} checked.\n\n",
            self.level, self.examples_used, self.examples_seen
        );
        s.push_str("| method | examples | tokens | Soft-NS | ln(NS/random) [95% CI] | Soft-NC | ln(NC/random) [95% CI] | hard NS/random [95% CI] | hard NC/random [95% CI] | antecedent top-3 [95% CI] | seed agreement ρ / top-3 | contexts/token | s/token |\n");
        s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for m in &self.methods {
            let agreement = match (m.stability_spearman, m.stability_top3) {
                (Some(r), Some(t)) => format!("{r:.2} / {:.0}%", 100.0 * t),
                (None, Some(t)) => format!("– / {:.0}%", 100.0 * t),
                _ => "–".into(),
            };
            let ante = m
                .antecedent_top3
                .map(|a| {
                    format!(
                        "{:.0}%{}",
                        100.0 * a,
                        m.antecedent_top3_ci
                            .map(|(lo, hi)| format!(" [{:.0}, {:.0}]", 100.0 * lo, 100.0 * hi))
                            .unwrap_or_default()
                    )
                })
                .unwrap_or_else(|| "–".into());
            let hard_ns = f2(self.ratio(m, |x| x.hard_ns_mean)) + &ci(m.hard_ns_ratio_ci);
            let hard_nc = f2(self.ratio(m, |x| x.hard_nc_mean)) + &ci(m.hard_nc_ratio_ci);
            s.push_str(&format!(
                "| {} | {} | {} | {} | {}{} | {} | {}{} | {} | {} | {} | {} | {} | {:.2} |\n",
                m.method,
                m.examples,
                m.tokens,
                f(m.soft_ns),
                f2(self.ln_ratio(m, |x| x.soft_ns)),
                ci(m.ln_soft_ns_ci),
                f(m.soft_nc),
                f2(self.ln_ratio(m, |x| x.soft_nc)),
                ci(m.ln_soft_nc_ci),
                hard_ns,
                hard_nc,
                ante,
                agreement,
                m.forward_rows
                    .map(|r| format!("{r:.0}"))
                    .unwrap_or_else(|| "–".into()),
                m.seconds_per_token
            ));
        }
        s.push_str(
            "\nSoft-NS / Soft-NC: soft normalized sufficiency and comprehensiveness (higher is more faithful), \
             mean over examples of each example's mean over its attributed tokens; every method's scores enter \
             them as |s| / sum |s| (non-negative, summing to 1 over the context). ln(x/random): the paper's \
             log ratio against softmax(U[0,1)) scores, with a bootstrap 95% interval (2,000 resamples of the \
             examples). Hard NS/NC: mean over rationale ratios 0.05, 0.1, 0.2, 0.3 (the paper's), divided by \
             random's. Seed agreement: a second run on an independent random stream; mean Spearman ρ, and the \
             share of tokens whose two top-3 sets share at least 2 tokens. Contexts/token: contexts the model \
             scored per attributed token (gradient methods: forward and backward passes). s/token: wall \
             seconds per attributed token.\n",
        );
        if !self.paired.is_empty() {
            s.push_str("\nPaired comparisons (per example; mean difference a − b with its bootstrap 95% interval, and the sign-flip permutation p-value; higher is better on every metric but aopc_suff, where a negative difference favours a):\n\n| a | b | metric | n | mean a − b | 95% CI | p |\n|---|---|---|---:|---:|---:|---:|\n");
            for p in &self.paired {
                s.push_str(&format!(
                    "| {} | {} | {} | {} | {:+.4} | {} | {:.4} |\n",
                    p.a,
                    p.b,
                    p.metric,
                    p.test.n,
                    p.test.mean_diff,
                    p.test
                        .interval
                        .map(|(lo, hi)| format!("[{lo:+.4}, {hi:+.4}]"))
                        .unwrap_or_else(|| "–".into()),
                    p.test.p_value
                ));
            }
        }
        let any_steps = self.methods.iter().any(|m| m.reagent_steps.is_some());
        if any_steps {
            for m in self.methods.iter().filter(|m| m.reagent_steps.is_some()) {
                s.push_str(&format!(
                    "\n{}: {} steps per token on average; {:.0}% of probes converged.\n",
                    m.method,
                    f2(m.reagent_steps),
                    100.0 * m.reagent_converged.unwrap_or(0.0)
                ));
            }
        }
        let embedding_metrics = self
            .methods
            .iter()
            .any(|m| m.soft_ns.is_some() || !m.hard.is_empty());
        if !embedding_metrics {
            s.push_str(
                "\nSoft and hard NS / NC: not computed. The paper's metrics zero input embeddings, \
                 which needs the model's weights; a served model gives next-token probabilities \
                 only. The erasure metrics below need nothing more.\n",
            );
        }
        if let Some(first) = self.methods.iter().find(|m| !m.erasure.is_empty()) {
            let ci = |c: Option<stats::Interval>| {
                c.map(|(lo, hi)| format!(" [{lo:.3}, {hi:.3}]"))
                    .unwrap_or_default()
            };
            s.push_str(
                "\nErasure metrics (ERASER's, tokens dropped from the context; p(target) in place of the class \
                 probability): Suff = p(y|x) − p(y|top k only), lower is better; Comp = p(y|x) − p(y|x without \
                 the top k), higher is better; AOPC = mean over ratios 0.05, 0.1, 0.2, 0.3, with a bootstrap 95% \
                 interval over examples. Special tokens are never dropped.\n\n| method | AOPC-Suff ↓ [95% CI] | AOPC-Comp ↑ [95% CI] |",
            );
            for e in &first.erasure {
                s.push_str(&format!(" {} Suff / Comp |", e.0));
            }
            s.push_str("\n|---|---:|---:|");
            s.push_str(&"---:|".repeat(first.erasure.len()));
            s.push('\n');
            for m in self.methods.iter().filter(|m| !m.erasure.is_empty()) {
                s.push_str(&format!(
                    "| {} | {}{} | {}{} |",
                    m.method,
                    f(m.aopc_suff),
                    ci(m.aopc_suff_ci),
                    f(m.aopc_comp),
                    ci(m.aopc_comp_ci)
                ));
                for e in &m.erasure {
                    s.push_str(&format!(" {} / {} |", f(e.1), f(e.2)));
                }
                s.push('\n');
            }
            let worst = self
                .methods
                .iter()
                .filter_map(|m| m.erasure_error)
                .fold(0.0, f64::max);
            if worst > 0.0 {
                s.push_str(&format!(
                    "\nThe server gave only its top K log-probabilities: a target outside them entered as the \
                     K-th probability, so an erasure value can be off by at most {worst:.2e}.\n"
                ));
            }
        }
        if let Some(first) = self.methods.iter().find(|m| !m.hard.is_empty()) {
            s.push_str("\nHard metrics per ratio (NS / NC):\n\n| method |");
            for h in &first.hard {
                s.push_str(&format!(" {} |", h.0));
            }
            s.push_str("\n|---|");
            s.push_str(&"---:|".repeat(first.hard.len()));
            s.push('\n');
            for m in self.methods.iter().filter(|m| !m.hard.is_empty()) {
                s.push_str(&format!("| {} |", m.method));
                for h in &m.hard {
                    s.push_str(&format!(" {} / {} |", f(h.1), f(h.2)));
                }
                s.push('\n');
            }
        }
        s
    }

    /// Write `summary.md` and `summary.csv`.
    pub fn write(&self, out: &Path) -> Result<()> {
        let title = std::fs::read_to_string(out.join("run.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .map(|v| {
                format!(
                    "{} on {}",
                    v["model"].as_str().unwrap_or("?"),
                    v["dataset"].as_str().unwrap_or("?")
                )
            })
            .unwrap_or_else(|| "Evaluation".into());
        let md: PathBuf = out.join("summary.md");
        std::fs::write(&md, self.to_markdown(&title)).with_path(&md)?;
        let csv = out.join("summary.csv");
        std::fs::write(&csv, self.to_csv()).with_path(&csv)?;
        Ok(())
    }
}
