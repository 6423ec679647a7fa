//! The `scenario` fuzz target's check: the harness's scenario YAML loader and its byte-template
//! notation, on arbitrary text.
//!
//! This file is compiled into the fuzz crate and, through `#[path]`, into the harness's replay
//! test and the corpus generator of `cargo xtask fuzz --seed`, so all three use one function and
//! one set of variables. It only calls the harness's public API.

use std::net::{Ipv6Addr, SocketAddr};
use std::path::Path;

use sockslab::scenario::template::{Value, Vars};
use sockslab::scenario::{Scenario, StepKind, Template};

/// Longest rendering attempted: `{repeat:41:4000000000}` is a valid token, and rendering it is
/// the scenario author's choice, not a bug to find.
const MAX_RENDER: usize = 1 << 16;

/// The variables a scenario run provides, with fixed values (target 127.0.0.1:7, proxy
/// 127.0.0.1:1080, user `user`, password `pass`) so rendering is reproducible.
pub fn fixed_vars() -> Vars {
    let target: SocketAddr = ([127, 0, 0, 1], 7).into();
    let proxy: SocketAddr = ([127, 0, 0, 1], 1080).into();
    let mut v = Vars::new();
    let mut put = |k: &str, bytes: Vec<u8>, addr: Option<SocketAddr>| {
        v.insert(k.to_string(), Value { bytes, label: None, addr });
    };
    put("target.addr", vec![127, 0, 0, 1], Some(target));
    put("target.addr6", Ipv6Addr::LOCALHOST.octets().to_vec(), Some(SocketAddr::new(Ipv6Addr::LOCALHOST.into(), 7)));
    put("target.port", 7u16.to_be_bytes().to_vec(), None);
    put("target.port.dec", b"7".to_vec(), None);
    put("target.name", b"localhost".to_vec(), None);
    put("target.name.len", vec![9], None);
    put("proxy.addr", vec![127, 0, 0, 1], Some(proxy));
    put("proxy.port", 1080u16.to_be_bytes().to_vec(), None);
    put("user", b"user".to_vec(), None);
    put("user.len", vec![4], None);
    put("pass", b"pass".to_vec(), None);
    put("pass.len", vec![4], None);
    put("bnd", vec![1, 127, 0, 0, 1, 0x04, 0x38], Some(proxy));
    v
}

/// Renders a sent template to bytes, or `None` when it cannot be sent with [`fixed_vars`].
pub fn render_send(t: &Template, vars: &Vars) -> Option<Vec<u8>> {
    if t.min_len(vars) > MAX_RENDER {
        return None;
    }
    let fields = t.render(vars).ok()?;
    Some(fields.into_iter().flat_map(|f| f.bytes).collect())
}

/// A template that renders matches its own rendering exactly, and every strict prefix of that
/// rendering is "need more" (`Ok(None)`), never a mismatch.
fn check_template(t: &Template, vars: &Vars) {
    let Some(bytes) = render_send(t, vars) else { return };
    assert!(t.min_len(vars) <= bytes.len(), "min_len {} > rendered {}", t.min_len(vars), bytes.len());
    match t.match_prefix(&bytes, vars) {
        Ok(Some(m)) => assert_eq!(m.consumed, bytes.len(), "template does not consume its own rendering"),
        other => panic!("template does not match its own rendering {bytes:02x?}: {other:?}"),
    }
    for cut in 0..bytes.len().min(512) {
        if let Err(e) = t.match_prefix(&bytes[..cut], vars) {
            panic!("prefix of {cut} bytes of a template's own rendering is a mismatch: {e:?}");
        }
    }
    let _ = t.render_pattern(vars);
}

/// The target: the input as a byte template, and as a scenario file.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(&data[..data.len().min(8192)]) else { return };
    let vars = fixed_vars();
    if let Ok(t) = Template::parse(text) {
        let _ = t.references();
        let _ = t.captures();
        check_template(&t, &vars);
    }
    let Ok(s) = sockslab::scenario::yaml::from_str::<Scenario>(Path::new("fuzz.yaml"), text) else { return };
    let _ = s.schedules();
    let _ = s.group();
    let login = s.with_login();
    for scn in std::iter::once(&s).chain(login.as_ref()) {
        for step in &scn.steps {
            match &step.kind {
                StepKind::Send(t) | StepKind::UdpSend { data: t, .. } => check_template(t, &vars),
                StepKind::Expect(p) | StepKind::UdpExpect(p) | StepKind::ExpectOptional { pattern: p, .. }
                    if p.min_len(&vars) <= MAX_RENDER =>
                {
                    let _ = p.render_pattern(&vars);
                    let _ = p.match_prefix(&[0x05, 0x00, 0x00, 0x01, 127, 0, 0, 1, 0, 7], &vars);
                }
                _ => {}
            }
        }
    }
}
