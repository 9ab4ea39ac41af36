//! A self-contained HTML report of attribution results: no CDN, no network.
//!
//! Per result: the model, method, configuration and seed; the text with each context token
//! shaded by its score for the selected target (a hover card gives the token, score, rank and,
//! for ReAGent, the score's spread: across probes, or the effect's standard error);
//! the targets × context heatmap drawn on a canvas (click a row to select its target, hover a
//! cell for its card); a token / word / sentence toggle (`#view=sentence` in the address opens
//! that view; words and sentences come from the text, as for `--unit`); a legend. Scores that
//! are all non-negative use one sequential scale (white → red, per row); signed scores a
//! diverging one (blue → white → red). The text view is written as HTML for the last target, so the page
//! reads without scripts; the script recolours it for the target selected.

use std::io::Write;

use std::io::Result;

use crate::result::{segment, AttributionResult, Unit};

/// Writes one page holding every result given.
pub struct Html;

/// `&`, `<`, `>`, `"` escaped for HTML text and attributes.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            c => o.push(c),
        }
    }
    o
}

/// JSON for a `<script>` block: `</` cannot close the script.
fn script_json<T: serde::Serialize>(v: &T) -> Result<String> {
    Ok(serde_json::to_string(v)?.replace("</", "<\\/"))
}

/// Background colour of a score for the static text view (white → red by `x / max`).
fn shade(x: f32, max: f32) -> String {
    let t = if max > 0.0 {
        (x / max).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let gb = (255.0 * (1.0 - 0.85 * t)).round() as u8;
    format!("rgb(255,{gb},{gb})")
}

const STYLE: &str = r#"
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#111;max-width:1200px}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:24px 0 8px}
.meta{color:#555;font-size:13px} details{font-size:12px;margin:6px 0}
.text{line-height:1.9;font-size:15px;white-space:pre-wrap;border:1px solid #ddd;padding:10px;border-radius:6px;max-height:45vh;overflow:auto}
.tok{border-radius:3px;padding:1px 0;cursor:default}
.tok.target{outline:2px solid #333}
.tok.template{color:#888;font-style:italic}
.controls{margin:8px 0;font-size:13px}
canvas{border:1px solid #ddd;image-rendering:pixelated;max-width:100%}
.legend{display:flex;align-items:center;gap:6px;font-size:12px;margin:6px 0}
.bar{width:160px;height:10px;border:1px solid #ccc}
#card{position:fixed;display:none;background:#fff;border:1px solid #999;border-radius:4px;padding:6px 8px;font-size:12px;pointer-events:none;box-shadow:0 2px 6px rgba(0,0,0,.2)}
"#;

const SCRIPT: &str = r#"
const card=document.getElementById('card');
function showCard(e,html){card.innerHTML=html;card.style.display='block';card.style.left=(e.clientX+12)+'px';card.style.top=(e.clientY+12)+'px';}
function hideCard(){card.style.display='none';}
function esc(s){return s.replace(/&/g,'&amp;').replace(/</g,'&lt;').replace(/>/g,'&gt;');}
function colour(x,max,signed){
  if(!(max>0))return 'rgb(255,255,255)';
  let t=Math.max(-1,Math.min(1,x/max));
  if(!signed||t>=0){const g=Math.round(255*(1-0.85*Math.max(t,0)));return `rgb(255,${g},${g})`;}
  const g=Math.round(255*(1+0.85*t));return `rgb(${g},${g},255)`;
}
function ranks(v){const o=v.map((x,i)=>[x,i]).sort((a,b)=>b[0]-a[0]);const r=new Array(v.length);o.forEach((p,k)=>r[p[1]]=k+1);return r;}
document.querySelectorAll('section.result').forEach(sec=>{
  const R=JSON.parse(sec.querySelector('script.data').textContent);
  const spans=[...sec.querySelectorAll('.text .tok')];
  const signed=R.targets.some(t=>t.scores.some(x=>x<0));
  const maxAbs=v=>v.reduce((m,x)=>Math.max(m,Math.abs(x)),0);
  let sel=R.targets.length-1, unit='token';
  const legend=sec.querySelector('.legend .bar');
  legend.style.background=signed?'linear-gradient(90deg,rgb(38,38,255),#fff,rgb(255,38,38))':'linear-gradient(90deg,#fff,rgb(255,38,38))';
  const G=JSON.parse(sec.querySelector('script.groups').textContent);
  // The result's own unit scores (--words, --unit) serve the view of their unit; any other
  // view sums the token scores over the text's words or sentences.
  const own=v=>{if(!R.words)return false;const u=R.words.unit||'word';return v===u||(v==='spans'&&u!=='word'&&u!=='sentence');};
  function rowScores(k){
    const t=R.targets[k];
    if(unit!=='token'&&own(unit)){const ws=R.words.scores[k];const out=new Array(t.position).fill(0);
      R.words.words.forEach((w,j)=>{for(let i=w.tokens[0];i<Math.min(w.tokens[1],t.position);i++)out[i]=ws[j];});return out;}
    if(unit!=='token'&&G[unit]){const out=new Array(t.position).fill(0);
      G[unit].forEach(([a,b])=>{const e=Math.min(b,t.position);let x=0;for(let i=a;i<e;i++)x+=t.scores[i];for(let i=a;i<e;i++)out[i]=x;});return out;}
    return t.scores;
  }
  // Per view, each token's unit text (null outside every unit), built once.
  const unitTexts={};
  function unitText(i){
    if(unit==='token')return null;
    if(!unitTexts[unit]){
      const out=new Array(R.tokens.length).fill(null);
      const gs=own(unit)?R.words.words.map(w=>w.tokens):G[unit]||[];
      gs.forEach(([a,b])=>{const text=R.tokens.slice(a,b).map(x=>x.text).join('');for(let j=a;j<b;j++)out[j]=text;});
      unitTexts[unit]=out;
    }
    return unitTexts[unit][i];
  }
  function paintText(){
    const t=R.targets[sel], s=rowScores(sel), m=maxAbs(s), rk=ranks(s);
    spans.forEach((el,i)=>{
      el.classList.toggle('target',i===t.position);
      const sp=(unit==='token'&&t.spread&&i<t.spread.length)?` ± ${t.spread[i].toFixed(4)}`:'';
      const u=i<t.position?unitText(i):null, ut=u===null?'':`<br>${unit} ${esc(JSON.stringify(u))}`;
      if(i<t.position){el.style.background=colour(s[i],m,signed);el.dataset.card=`<b>${esc(JSON.stringify(R.tokens[i].text))}</b>${ut}<br>score ${s[i].toFixed(4)}${sp}<br>rank ${rk[i]} of ${s.length}`;}
      else{el.style.background='transparent';el.dataset.card=i===t.position?`target <b>${esc(JSON.stringify(t.text))}</b> p=${t.prob.toFixed(4)}`:'';}
    });
    sec.querySelector('.selected').textContent=`target ${sel+1} of ${R.targets.length}: ${JSON.stringify(t.text)}`+(t.contrast?` vs ${JSON.stringify(t.contrast.text)}`:'');
    sec.querySelector('.legend .max').textContent=m.toFixed(3);
    sec.querySelector('.legend .min').textContent=signed?(-m).toFixed(3):'0';
  }
  spans.forEach(el=>{el.addEventListener('mousemove',e=>{if(el.dataset.card)showCard(e,el.dataset.card);});el.addEventListener('mouseleave',hideCard);});
  const cv=sec.querySelector('canvas'), ctx=cv.getContext('2d');
  const L=R.tokens.length, T=R.targets.length;
  const cw=Math.max(2,Math.min(40,Math.floor(1100/Math.max(L,1)))), ch=Math.max(3,Math.min(28,Math.floor(600/Math.max(T,1))));
  cv.width=L*cw; cv.height=T*ch;
  function paintHeat(){
    for(let k=0;k<T;k++){const s=rowScores(k),m=maxAbs(s);
      for(let i=0;i<L;i++){ctx.fillStyle=i<s.length?colour(s[i],m,signed):(i===R.targets[k].position?'#333':'#f4f4f4');ctx.fillRect(i*cw,k*ch,cw,ch);}
      if(k===sel){ctx.strokeStyle='#000';ctx.lineWidth=1;ctx.strokeRect(0.5,k*ch+0.5,L*cw-1,ch-1);}}
  }
  function cell(e){const r=cv.getBoundingClientRect();const sx=cv.width/r.width,sy=cv.height/r.height;
    return [Math.floor((e.clientX-r.left)*sx/cw),Math.floor((e.clientY-r.top)*sy/ch)];}
  cv.addEventListener('mousemove',e=>{const [i,k]=cell(e);if(k<0||k>=T||i<0||i>=L){hideCard();return;}
    const t=R.targets[k],s=rowScores(k);
    if(i<s.length){const rk=ranks(s);showCard(e,`target ${esc(JSON.stringify(t.text))}<br>token <b>${esc(JSON.stringify(R.tokens[i].text))}</b><br>score ${s[i].toFixed(4)}, rank ${rk[i]} of ${s.length}`);}else hideCard();});
  cv.addEventListener('mouseleave',hideCard);
  cv.addEventListener('click',e=>{const [,k]=cell(e);if(k>=0&&k<T){sel=k;paintText();paintHeat();}});
  sec.querySelectorAll('input[name^=unit]').forEach(b=>b.addEventListener('change',()=>{unit=b.value;paintText();paintHeat();}));
  // `page.html#view=sentence` opens every result in that view.
  const want=new URLSearchParams(location.hash.slice(1)).get('view');
  const start=[...sec.querySelectorAll('input[name^=unit]')].find(b=>b.value===want);
  if(start){start.checked=true;unit=want;}
  paintText();paintHeat();
});
"#;

impl Html {
    /// The page as a string.
    pub fn page(&self, results: &[AttributionResult]) -> String {
        let mut out = Vec::new();
        self.render(results, &mut out)
            .expect("writing to memory does not fail");
        String::from_utf8(out).expect("the page is UTF-8")
    }

    /// Write one page with every result.
    pub fn render(&self, results: &[AttributionResult], mut w: impl Write) -> Result<()> {
        writeln!(
            w,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>reagent attribution</title><style>{STYLE}</style></head><body>"
        )?;
        for (n, r) in results.iter().enumerate() {
            self.section(n, r, &mut w)?;
        }
        writeln!(
            w,
            "<div id=\"card\"></div><script>{SCRIPT}</script></body></html>"
        )?;
        Ok(())
    }

    fn section(&self, n: usize, r: &AttributionResult, w: &mut impl Write) -> Result<()> {
        let p = &r.provenance;
        let cfg = &p.config;
        writeln!(w, "<section class=\"result\" id=\"result-{n}\">")?;
        writeln!(
            w,
            "<h1>{} · {}</h1><div class=\"meta\">{} · {} target{} · {}{} · {:.1} s</div>",
            esc(&p.model),
            esc(&p.method),
            esc(&p.architecture),
            r.targets.len(),
            if r.targets.len() == 1 { "" } else { "s" },
            esc(&r.target_mode),
            cfg.get("seed")
                .map(|s| format!(" · seed {s}"))
                .unwrap_or_default(),
            r.wall_s
        )?;
        writeln!(
            w,
            "<details><summary>configuration</summary><pre>{}</pre></details>",
            esc(&serde_json::to_string_pretty(cfg)?)
        )?;
        // Views: tokens, the text's words and sentences (token scores summed, or the unit
        // scores of `--words` / `--unit` for their unit), and the spans of `--unit-spans`.
        let radio = |value: &str, label: &str, checked: bool| {
            format!(
                "<label><input type=\"radio\" name=\"unit{n}\" value=\"{value}\"{}> {label}</label>",
                if checked { " checked" } else { "" }
            )
        };
        let mut views = vec![
            radio("token", "tokens", true),
            radio("word", "words", false),
            radio("sentence", "sentences", false),
        ];
        if matches!(&r.words, Some(ws) if !matches!(ws.unit.as_deref(), None | Some("word") | Some("sentence")))
        {
            views.push(radio("spans", "spans", false));
        }
        let unit_toggle = format!(" · view: {}", views.join(" "));
        writeln!(
            w,
            "<div class=\"controls\"><span class=\"selected\"></span>{unit_toggle}</div>\
             <div class=\"legend\"><span class=\"min\">0</span><span class=\"bar\"></span>\
             <span class=\"max\"></span><span>score (each row scaled to its largest)</span></div>"
        )?;
        // The text view, shaded for the last target.
        let last = r.targets.last();
        let (scores, position): (&[f32], usize) = match last {
            Some(t) => (&t.scores.scores, t.position),
            None => (&[], 0),
        };
        let max = scores.iter().fold(0f32, |m, x| m.max(x.abs()));
        write!(w, "<div class=\"text\">")?;
        for (i, t) in r.tokens.iter().enumerate() {
            let bg = if i < position {
                shade(scores[i], max)
            } else {
                "transparent".into()
            };
            // A chat template's tokens are shown apart: grey, and titled so.
            let class = match (i == position, t.template) {
                (true, _) => "tok target",
                (false, true) => "tok template",
                (false, false) => "tok",
            };
            write!(
                w,
                "<span class=\"{class}\" data-i=\"{i}\" style=\"background:{bg}\">{}</span>",
                esc(&t.text)
            )?;
        }
        writeln!(w, "</div>")?;
        writeln!(
            w,
            "<h2>Targets × context</h2><canvas class=\"heatmap\" aria-label=\"heatmap of {} targets by {} tokens\"></canvas>",
            r.targets.len(),
            r.tokens.len()
        )?;
        writeln!(
            w,
            "<script type=\"application/json\" class=\"data\">{}</script>",
            script_json(r)?
        )?;
        // The text's words and sentences as token ranges, for the views that sum over them.
        let groups = |unit: Unit| -> Vec<(usize, usize)> {
            segment(&r.text, &r.tokens, &unit)
                .map(|ws| ws.into_iter().map(|w| w.tokens).collect())
                .unwrap_or_default()
        };
        writeln!(
            w,
            "<script type=\"application/json\" class=\"groups\">{}</script>",
            script_json(&serde_json::json!({
                "word": groups(Unit::Word),
                "sentence": groups(Unit::Sentence),
            }))?
        )?;
        writeln!(w, "</section>")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::method::TargetScores;
    use crate::result::{Provenance, TargetAttribution, Token};

    /// A result of `l` context tokens and `t` targets (the last `t` tokens): the words " W0",
    /// " w1", ..., " w9.", " W10", ...: a sentence of every ten.
    fn synthetic(l: usize, t: usize) -> AttributionResult {
        let mut text = String::new();
        let tokens: Vec<Token> = (0..l + t)
            .map(|i| {
                let word = match i % 10 {
                    0 => format!(" W{i}"),
                    9 => format!(" w{i}."),
                    _ => format!(" w{i}"),
                };
                let start = text.chars().count();
                text.push_str(&word);
                Token {
                    id: i as u32,
                    text: word,
                    start,
                    end: text.chars().count(),
                    special: false,
                    template: false,
                }
            })
            .collect();
        let targets = (0..t)
            .map(|k| {
                let pos = l + k;
                let scores: Vec<f32> = (0..pos).map(|i| ((i * 7 + k) % 13) as f32 / 13.0).collect();
                TargetAttribution {
                    position: pos,
                    id: pos as u32,
                    text: format!(" w{pos}"),
                    prob: 0.5,
                    contrast: None,
                    scores: TargetScores::plain(scores),
                    backend: None,
                    wall_s: 0.0,
                }
            })
            .collect();
        AttributionResult {
            provenance: Provenance {
                reagent_version: "test".into(),
                model: "m".into(),
                architecture: "a".into(),
                weights: "f32".into(),
                method: "reagent".into(),
                config: serde_json::json!({"seed": 1}),
            },
            text,
            tokens,
            prompt_tokens: l,
            target_mode: "forced".into(),
            targets,
            words: None,
            wall_s: 0.0,
        }
    }

    /// 2,000 context tokens and 100 targets stay a page of a few megabytes. Set
    /// `REAGENT_HTML_SAMPLE=path` to keep the page (for timing it in a browser).
    #[test]
    fn a_large_result_stays_a_small_page() {
        let mut out = Vec::new();
        let r = synthetic(2000, 100);
        Html.render(std::slice::from_ref(&r), &mut out).unwrap();
        assert!(out.len() < 4_000_000, "{} bytes", out.len());
        // The word and sentence views' groups are there: 2,100 words, 210 sentences.
        let page = String::from_utf8(out.clone()).unwrap();
        let g = &page[page.find("class=\"groups\">").unwrap()..];
        let g: serde_json::Value =
            serde_json::from_str(&g[g.find('>').unwrap() + 1..g.find("</script>").unwrap()])
                .unwrap();
        assert_eq!(g["word"].as_array().unwrap().len(), 2100);
        assert_eq!(g["sentence"].as_array().unwrap().len(), 210);
        if let Ok(p) = std::env::var("REAGENT_HTML_SAMPLE") {
            std::fs::write(p, &out).unwrap();
        }
    }

    /// A chat template's tokens are marked apart in the text view.
    #[test]
    fn template_tokens_are_shown_apart() {
        let mut r = synthetic(4, 1);
        r.tokens[0].template = true;
        let page = Html.page(&[r]);
        assert_eq!(page.matches("class=\"tok template\"").count(), 1);
    }

    /// Every page has the token, word and sentence views, with the words and sentences of the
    /// text as token ranges; spans of `--unit-spans` add their own view.
    #[test]
    fn the_views_and_their_groups() {
        use crate::result::{Word, WordAggregation, WordScores};
        let mut r = synthetic(4, 1);
        // Five tokens: "w0", " w1.", " W2", " w3" and the target " w4".
        r.text = "w0 w1. W2 w3 w4".into();
        for (i, t) in r.tokens.iter_mut().enumerate() {
            (t.start, t.end) = ([0, 2, 6, 9, 12][i], [2, 6, 9, 12, 15][i]);
        }
        let page = Html.page(&[r.clone()]);
        for view in ["> tokens</label>", "> words</label>", "> sentences</label>"] {
            assert!(page.contains(view), "{view}");
        }
        assert!(!page.contains("> spans</label>"));
        let g = &page[page.find("class=\"groups\">").unwrap()..];
        let g: serde_json::Value =
            serde_json::from_str(&g[g.find('>').unwrap() + 1..g.find("</script>").unwrap()])
                .unwrap();
        assert_eq!(g["sentence"], serde_json::json!([[0, 2], [2, 5]]));
        assert_eq!(
            g["word"],
            serde_json::json!([[0, 1], [1, 2], [2, 3], [3, 4], [4, 5]])
        );
        r.words = Some(WordScores {
            aggregation: WordAggregation::Sum,
            unit: Some("spans".into()),
            perturbed: true,
            words: vec![Word {
                text: "w0 w1".into(),
                tokens: (0, 2),
            }],
            scores: vec![vec![1.0]],
        });
        assert!(Html.page(&[r]).contains("> spans</label>"));
    }

    #[test]
    fn escaping() {
        assert_eq!(
            esc("<a href=\"x\">&</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
        );
        let v = serde_json::json!({"t": "</script><b>"});
        assert!(!script_json(&v).unwrap().contains("</script>"));
        assert_eq!(shade(0.0, 1.0), "rgb(255,255,255)");
        assert_eq!(shade(1.0, 1.0), "rgb(255,38,38)");
        assert_eq!(shade(1.0, 0.0), "rgb(255,255,255)");
    }
}
