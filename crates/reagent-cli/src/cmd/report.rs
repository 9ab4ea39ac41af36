//! `reagent report DIR`: an evaluation folder as a page with figures (plotters, SVG): the
//! ln-ratio bars with their bootstrap intervals per method, the hard metrics against the
//! rationale ratio, the erasure metrics' AOPC bars (where the run has them; against a served
//! model they are the only metrics), and the seconds per attributed token. Writes `DIR/report.html` (figures
//! inline, no network) and `DIR/figures/*.svg`.

use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;
use reagent::eval::runner::{MethodSummary, Summary};

use crate::args::ReportArgs;

/// One bar: a method, its value and its interval.
type Bar = (String, Option<f64>, Option<(f64, f64)>);

/// A bar chart of one value per method, with optional interval whiskers.
fn bars(path: &Path, title: &str, rows: &[Bar]) -> Result<()> {
    let rows: Vec<_> = rows.iter().filter(|r| r.1.is_some()).collect();
    let h = 60 + 26 * rows.len().max(1) as u32;
    let root = SVGBackend::new(path, (720, h)).into_drawing_area();
    root.fill(&WHITE)?;
    let (mut lo, mut hi) = (0f64, 0f64);
    for (_, v, ci) in &rows {
        let v = v.unwrap_or(0.0);
        lo = lo.min(v);
        hi = hi.max(v);
        if let Some((a, b)) = ci {
            lo = lo.min(*a);
            hi = hi.max(*b);
        }
    }
    let pad = ((hi - lo) * 0.05).max(0.05);
    let n = rows.len().max(1);
    let labels: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(24)
        .y_label_area_size(170)
        .build_cartesian_2d((lo - pad)..(hi + pad), (0usize..n).into_segmented())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) if *i < labels.len() => labels[n - 1 - i].clone(),
            _ => String::new(),
        })
        .draw()?;
    for (i, (_, v, ci)) in rows.iter().enumerate() {
        let y = n - 1 - i;
        let v = v.unwrap_or(0.0);
        let colour = if i == 0 {
            RGBColor(200, 40, 40)
        } else {
            RGBColor(120, 140, 200)
        };
        let mut bar = Rectangle::new(
            [
                (0.0, SegmentValue::Exact(y)),
                (v, SegmentValue::Exact(y + 1)),
            ],
            colour.filled(),
        );
        bar.set_margin(4, 4, 0, 0);
        chart.draw_series(std::iter::once(bar))?;
        if let Some((a, b)) = ci {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![
                    (*a, SegmentValue::CenterOf(y)),
                    (*b, SegmentValue::CenterOf(y)),
                ],
                BLACK.stroke_width(2),
            )))?;
        }
    }
    root.present()?;
    Ok(())
}

/// Hard NS and NC against the rationale ratio, one line per method.
fn hard_lines(path: &Path, s: &Summary) -> Result<()> {
    let root = SVGBackend::new(path, (720, 360)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(360);
    for (area, which, title) in [
        (&left, 1usize, "hard sufficiency (NS)"),
        (&right, 2, "hard comprehensiveness (NC)"),
    ] {
        let mut ymax = 0.1f64;
        for m in &s.methods {
            for h in &m.hard {
                let v = if which == 1 { h.1 } else { h.2 };
                ymax = ymax.max(v.unwrap_or(0.0));
            }
        }
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 14))
            .margin(8)
            .x_label_area_size(24)
            .y_label_area_size(36)
            .build_cartesian_2d(0f64..0.55, 0f64..ymax * 1.1)?;
        chart.configure_mesh().x_desc("rationale ratio").draw()?;
        for (k, m) in s.methods.iter().enumerate() {
            let pts: Vec<(f64, f64)> = m
                .hard
                .iter()
                .filter_map(|h| {
                    let v = if which == 1 { h.1 } else { h.2 };
                    v.map(|v| (h.0, v))
                })
                .collect();
            let colour = Palette99::pick(k).to_rgba();
            chart
                .draw_series(std::iter::once(PathElement::new(
                    pts,
                    colour.stroke_width(2),
                )))?
                .label(m.method.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], colour));
        }
        if which == 2 {
            chart
                .configure_series_labels()
                .label_font(("sans-serif", 10))
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
        }
    }
    root.present()?;
    Ok(())
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub fn run(a: ReportArgs) -> Result<()> {
    let run_json = a.dir.join("run.json");
    let text = std::fs::read_to_string(&run_json)
        .with_context(|| format!("{} is not an evaluation folder", a.dir.display()))?;
    let info: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", run_json.display()))?;
    let level = info["level"]
        .as_str()
        .with_context(|| format!("{}: no `level`", run_json.display()))?;
    let s = Summary::from_files(&a.dir, level)?;
    if s.methods.is_empty() {
        anyhow::bail!("{} holds no results yet", a.dir.display());
    }
    let figures = a.dir.join("figures");
    std::fs::create_dir_all(&figures)
        .with_context(|| format!("cannot create {}", figures.display()))?;
    // The paper's metrics where this run has them (a served model has the erasure ones only).
    let embedding = s.methods.iter().any(|m| m.soft_nc.is_some());
    let erasure = s.methods.iter().any(|m| m.aopc_comp.is_some());
    // Methods by ln(Soft-NC / random), or by erasure comprehensiveness, best first.
    let mut order: Vec<&MethodSummary> = s.methods.iter().collect();
    let key = |m: &MethodSummary| {
        if embedding {
            s.ln_ratio(m, |x| x.soft_nc)
        } else {
            m.aopc_comp
        }
        .unwrap_or(f64::NEG_INFINITY)
    };
    order.sort_by(|x, y| key(y).total_cmp(&key(x)));
    let rows = |pick: fn(&MethodSummary) -> Option<f64>,
                ci: fn(&MethodSummary) -> Option<(f64, f64)>| {
        order
            .iter()
            .map(|m| (m.method.clone(), s.ln_ratio(m, pick), ci(m)))
            .collect::<Vec<_>>()
    };
    let raw = |pick: fn(&MethodSummary) -> Option<f64>,
               ci: fn(&MethodSummary) -> Option<(f64, f64)>| {
        order
            .iter()
            .map(|m| (m.method.clone(), pick(m), ci(m)))
            .collect::<Vec<_>>()
    };
    let mut files: Vec<(&str, &str)> = Vec::new();
    if embedding {
        files.push(("soft_nc.svg", "Soft-NC, ln(method / random), 95% interval"));
        bars(
            &figures.join("soft_nc.svg"),
            "Soft-NC, ln(method / random), 95% interval",
            &rows(|x| x.soft_nc, |x| x.ln_soft_nc_ci),
        )?;
        files.push(("soft_ns.svg", "Soft-NS, ln(method / random), 95% interval"));
        bars(
            &figures.join("soft_ns.svg"),
            "Soft-NS, ln(method / random), 95% interval",
            &rows(|x| x.soft_ns, |x| x.ln_soft_ns_ci),
        )?;
        files.push(("hard.svg", "hard metrics"));
        hard_lines(&figures.join("hard.svg"), &s)?;
    }
    if erasure {
        let comp = "erasure comprehensiveness (AOPC; higher is better), 95% interval";
        files.push(("aopc_comp.svg", comp));
        bars(
            &figures.join("aopc_comp.svg"),
            comp,
            &raw(|x| x.aopc_comp, |x| x.aopc_comp_ci),
        )?;
        let suff = "erasure sufficiency (AOPC; lower is better), 95% interval";
        files.push(("aopc_suff.svg", suff));
        bars(
            &figures.join("aopc_suff.svg"),
            suff,
            &raw(|x| x.aopc_suff, |x| x.aopc_suff_ci),
        )?;
    }
    files.push(("seconds.svg", "seconds per attributed token"));
    let secs: Vec<_> = order
        .iter()
        .map(|m| (m.method.clone(), Some(m.seconds_per_token), None))
        .collect();
    bars(
        &figures.join("seconds.svg"),
        "seconds per attributed token",
        &secs,
    )?;

    let title = format!(
        "{} on {}",
        info["model"].as_str().unwrap_or("?"),
        info["dataset"].as_str().unwrap_or("?")
    );
    let mut page = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:system-ui,sans-serif;margin:24px;max-width:1000px}}\
         table{{border-collapse:collapse;font-size:12px}}td,th{{border:1px solid #ddd;padding:3px 6px;text-align:right}}\
         td:first-child,th:first-child{{text-align:left}}figure{{margin:16px 0}}</style></head><body>\
         <h1>{t}</h1><p>{lvl} level; {used} examples used of {seen} checked.</p>",
        t = esc(&title),
        lvl = esc(level),
        used = s.examples_used,
        seen = s.examples_seen
    );
    page.push_str("<table><tr><th>method</th><th>examples</th><th>ln(Soft-NC/random) [95% CI]</th><th>ln(Soft-NS/random) [95% CI]</th><th>antecedent top-3</th><th>seed agreement (top-3 ≥ 2)</th><th>erasure AOPC-Comp ↑ [95% CI]</th><th>erasure AOPC-Suff ↓ [95% CI]</th><th>s/token</th></tr>");
    let f = |x: Option<f64>, ci: Option<(f64, f64)>| match (x, ci) {
        (Some(v), Some((a, b))) => format!("{v:+.2} [{a:+.2}, {b:+.2}]"),
        (Some(v), None) => format!("{v:+.2}"),
        _ => "–".into(),
    };
    let g = |x: Option<f64>, ci: Option<(f64, f64)>| match (x, ci) {
        (Some(v), Some((a, b))) => format!("{v:.3} [{a:.3}, {b:.3}]"),
        (Some(v), None) => format!("{v:.3}"),
        _ => "–".into(),
    };
    for m in &order {
        page.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td></tr>",
            esc(&m.method),
            m.examples,
            f(s.ln_ratio(m, |x| x.soft_nc), m.ln_soft_nc_ci),
            f(s.ln_ratio(m, |x| x.soft_ns), m.ln_soft_ns_ci),
            m.antecedent_top3
                .map(|v| format!("{:.0}%", 100.0 * v))
                .unwrap_or_else(|| "–".into()),
            m.stability_top3
                .map(|v| format!("{:.0}%", 100.0 * v))
                .unwrap_or_else(|| "–".into()),
            g(m.aopc_comp, m.aopc_comp_ci),
            g(m.aopc_suff, m.aopc_suff_ci),
            m.seconds_per_token
        ));
    }
    page.push_str("</table>");
    for (file, caption) in files {
        let svg = std::fs::read_to_string(figures.join(file))?;
        page.push_str(&format!(
            "<figure>{svg}<figcaption>{}</figcaption></figure>",
            esc(caption)
        ));
    }
    page.push_str("</body></html>\n");
    let out = a.dir.join("report.html");
    std::fs::write(&out, page).with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!("wrote {} and {}", out.display(), figures.display());
    Ok(())
}
