//! The HTML matrix, opened in a real browser (headless Debian Chromium): it must render without
//! console errors, and the DOM the browser built (not our string) must carry every cell's verdict,
//! the gost rows and columns, and each failing cell's reproducer. Runs on the report fixture, so
//! it needs no lab. Without Chromium it prints why it skipped, except under `CI=true`, where a
//! missing browser is an error (CI installs Debian's `chromium`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::report::{self, fixture};
use super::{Kind, CLIENTS, SERVERS};
use crate::peers::{self, Feature};

/// Long enough for a cold Chromium start on a loaded 2-core machine; only a guard against a hung
/// browser (the test then fails saying so), not a measurement.
const HANG_GUARD: Duration = Duration::from_secs(120);

fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("chromium")).find(|p| p.is_file())
}

/// Runs headless Chromium on `page` with `extra` flags and a fresh profile; returns stdout and
/// stderr (console messages are logged to stderr by `--enable-logging=stderr --v=0`).
fn run_chromium(bin: &Path, page: &Path, extra: &[String]) -> (String, String) {
    let profile = tempfile::tempdir().expect("a temp dir for the browser profile");
    let dir = tempfile::tempdir().expect("a temp dir for the browser output");
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        // Files, not pipes: the DOM dump can exceed a pipe buffer while we only wait.
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > HANG_GUARD {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{} hung on {} (killed after {HANG_GUARD:?})", bin.display(), page.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (out, err) = (std::fs::read_to_string(&out_path).unwrap(), std::fs::read_to_string(&err_path).unwrap());
    assert!(status.success(), "{} {extra:?} failed ({status}):\n{err}", bin.display());
    (out, err)
}

/// The console lines of Chromium's log (`…:INFO:CONSOLE(…)] "message", source: …`).
fn console_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains(":CONSOLE")).collect()
}

/// How the browser serializes a text node: only `&`, `<`, `>` escaped.
fn dom_text(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The text inside the element that starts at `start` (an index into `dom`) up to `end_tag`,
/// tags removed.
fn text_until(dom: &str, start: usize, end_tag: &str) -> String {
    let body = &dom[start..];
    let open_end = body.find('>').map(|i| i + 1).unwrap_or(0);
    let inner = &body[open_end..body[open_end..].find(end_tag).map(|i| i + open_end).unwrap_or(body.len())];
    let mut text = String::new();
    let mut in_tag = false;
    for ch in inner.chars() {
        match ch {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.trim().to_string()
}

#[test]
fn the_html_matrix_renders_in_chromium_with_every_verdict_and_reproducer() {
    let Some(bin) = chromium() else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but no `chromium` on PATH (Debian package `chromium`; .ci/run installs it)");
        }
        eprintln!("skipped: no `chromium` on PATH (apt-get install chromium, or set CHROMIUM=/path/to/it)");
        return;
    };
    let rep = fixture::report();
    let dir = tempfile::tempdir().unwrap();

    // The console check must be able to fail: a page that logs an error is seen as one.
    let probe = dir.path().join("probe.html");
    std::fs::write(&probe, "<!doctype html><script>console.error('sockslab-console-probe')</script>").unwrap();
    let (_, err) = run_chromium(&bin, &probe, &["--dump-dom".into()]);
    assert!(
        console_lines(&err).iter().any(|l| l.contains("sockslab-console-probe")),
        "Chromium's log did not show a console error from the probe page, so the check below would prove nothing:\n{err}"
    );

    let page = dir.path().join("interop.html");
    std::fs::write(&page, report::html(&rep)).unwrap();
    let (dom, err) = run_chromium(&bin, &page, &["--dump-dom".into()]);
    assert!(console_lines(&err).is_empty(), "console messages while rendering the report:\n{err}");
    assert!(dom.contains("<h1>sockslab interop matrix</h1>"), "the dumped DOM is not the report:\n{dom}");

    // Every matrix and bypass cell: a table cell carrying its id and verdict, showing the verdict.
    let mut checked = 0;
    for c in rep.cells.iter().filter(|c| c.cell.kind != Kind::Scenario) {
        let attrs = format!("data-cell=\"{}\" data-verdict=\"{}\"", c.cell.id, c.status.label());
        let at = dom.find(&attrs).unwrap_or_else(|| panic!("no cell `{attrs}` in the rendered DOM"));
        let td = dom[..at].rfind("<td").expect("the verdict attributes sit on a <td>");
        assert_eq!(text_until(&dom, td, "</td>"), c.status.label(), "{}", c.cell.id);
        checked += 1;
    }
    assert!(checked > 80, "the fixture's matrix is too small to mean anything: {checked}");

    // gost as a column and as a row of every feature table the fixture has.
    for f in [Feature::Socks5Connect, Feature::Userpass, Feature::UdpAssociate, Feature::Mbind] {
        let h = format!("<h3>{}</h3>", f.name());
        let at = dom.find(&h).unwrap_or_else(|| panic!("no table {h}"));
        let table = &dom[at..at + dom[at..].find("</table>").expect("the table ends")];
        let header = &table[..table.find("</tr>").unwrap()];
        for s in SERVERS {
            assert!(header.contains(&format!("<th>{s}</th>")), "{}: no column {s}", f.name());
        }
        for c in CLIENTS {
            assert!(table.contains(&format!("<tr><th>{c}</th>")), "{}: no row {c}", f.name());
        }
        assert!(table.contains(&format!("data-cell=\"{}.gost.gost\"", f.name())), "{}: no gost × gost", f.name());
    }

    // Every failing cell: its reproducer, and a link from its matrix cell to it.
    let failing: Vec<_> = rep.cells.iter().filter(|c| c.status.is_error(super::STRICT)).collect();
    assert_eq!(failing.len(), 1, "the fixture has one unexpected failure");
    for c in failing {
        let code = format!("<code class=\"reproduce\" data-cell=\"{}\">{}</code>", c.cell.id, dom_text(&c.reproduce));
        assert!(dom.contains(&code), "no reproducer `{code}` in the rendered DOM");
        let anchor: String = c.cell.id.chars().map(|x| if x.is_ascii_alphanumeric() { x } else { '-' }).collect();
        assert!(
            dom.contains(&format!("<a href=\"#{anchor}\">FAIL</a>")),
            "{}: the matrix cell does not link",
            c.cell.id
        );
        assert!(dom.contains(&format!("id=\"{anchor}\"")), "{}: no section to link to", c.cell.id);
        assert!(dom.contains(&dom_text(&c.detail)), "{}: the failure detail is missing", c.cell.id);
    }
    assert!(
        dom.contains(fixture::XFAIL_ID) && dom.contains("answers from the wrong port"),
        "the xfail reason is missing"
    );

    // A screenshot for a human to look at, kept under the lab's work directory.
    let shots = peers::work_dir().join("browser-test");
    std::fs::create_dir_all(&shots).unwrap();
    let png = shots.join("interop.png");
    let _ = std::fs::remove_file(&png);
    let (_, err) = run_chromium(
        &bin,
        &page,
        &[format!("--screenshot={}", png.display()), "--window-size=1500,2200".into(), "--hide-scrollbars".into()],
    );
    assert!(console_lines(&err).is_empty(), "console messages while taking the screenshot:\n{err}");
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot at {}: {e}\n{err}", png.display()));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is not a PNG", png.display());
    eprintln!("screenshot: {}", png.display());
}
