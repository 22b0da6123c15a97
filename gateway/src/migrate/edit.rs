//! The two text edits `migrate` makes, as pure functions of a file's bytes:
//! Apache's `ProxyPass` lines that send clients to the Ruby plugin, and the
//! installer's hiera flag that turns the plugin off. Both leave every other
//! byte alone and change nothing the second time.

/// One line changed, for the report. `line` is 1-based in the original file;
/// `old` is `None` for an inserted line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edit {
    pub line: usize,
    pub old: Option<String>,
    pub new: String,
}

/// The Ruby plugin's mount point on foreman-proxy (its
/// `container_gateway_http_config.ru`), which the installer's `ProxyPass`
/// targets end in (theforeman/puppet-foreman_proxy_content 9f441f35,
/// `manifests/container.pp`: `<registered proxy url>/container_gateway<path>`).
const MOUNT: &str = "/container_gateway";

/// The client routes the gateway serves on its plain listener.
const CLIENT_PREFIXES: [&str; 3] = ["/v1/", "/v2/", "/index/"];

/// The header the gateway reads a frontend's client certificate from. `set`
/// replaces whatever a client sent under that name.
pub const CERT_HEADER_LINE: &str =
    r#"RequestHeader set X-RHSM-SSL-Client-Cert "%{SSL_CLIENT_CERT}s""#;

/// What a vhost rewrite found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VhostRewrite {
    pub text: String,
    pub edits: Vec<Edit>,
    /// `ProxyPass` lines to the plugin for a path the gateway does not serve,
    /// left as they are.
    pub left: Vec<Edit>,
}

/// Point the `ProxyPass`/`ProxyPassReverse` lines for `/v1/`, `/v2/` and
/// `/index/` that target the Ruby plugin at `http://<plain>` instead, and
/// make sure the vhost forwards the client certificate under the name the
/// gateway reads, just before the first of them.
pub fn rewrite_vhost(text: &str, plain: &str) -> VhostRewrite {
    let mut out = String::with_capacity(text.len() + 128);
    let mut edits = Vec::new();
    let mut left = Vec::new();
    let has_header = text
        .lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") == CERT_HEADER_LINE);
    let mut header_done = has_header;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let Some(new) = proxy_pass_target(line, plain) else {
            if let Some(ours) = plugin_line_left(line) {
                left.push(Edit {
                    line: i + 1,
                    old: Some(ours),
                    new: String::new(),
                });
            }
            out.push_str(line);
            continue;
        };
        let indent: String = line.chars().take_while(|c| c.is_whitespace()).collect();
        let ending = if line.ends_with("\r\n") {
            "\r\n"
        } else if line.ends_with('\n') {
            "\n"
        } else {
            ""
        };
        if !header_done {
            let header = format!("{indent}{CERT_HEADER_LINE}");
            edits.push(Edit {
                line: i + 1,
                old: None,
                new: header.clone(),
            });
            out.push_str(&header);
            out.push_str(if ending.is_empty() { "\n" } else { ending });
            header_done = true;
        }
        let replaced = format!("{indent}{new}");
        edits.push(Edit {
            line: i + 1,
            old: Some(line.trim_end_matches(['\r', '\n']).to_owned()),
            new: replaced.clone(),
        });
        out.push_str(&replaced);
        out.push_str(ending);
    }
    VhostRewrite {
        text: out,
        edits,
        left,
    }
}

/// `(directive, path, target, rest)` of a `ProxyPass`-family line.
fn proxy_pass(line: &str) -> Option<(&str, &str, &str, Vec<&str>)> {
    let mut words = line.split_whitespace();
    let directive = words.next()?;
    if !directive.eq_ignore_ascii_case("ProxyPass")
        && !directive.eq_ignore_ascii_case("ProxyPassReverse")
    {
        return None;
    }
    let path = words.next()?;
    let target = words.next()?;
    Some((directive, path, target, words.collect()))
}

/// The rewritten line (without indentation and line ending) when `line`
/// sends a client route to the Ruby plugin.
fn proxy_pass_target(line: &str, plain: &str) -> Option<String> {
    let (directive, path, target, rest) = proxy_pass(line)?;
    if !CLIENT_PREFIXES.contains(&path) {
        return None;
    }
    let to_plugin = target.split_once(MOUNT).is_some_and(|(origin, suffix)| {
        (origin.starts_with("http://") || origin.starts_with("https://")) && suffix == path
    });
    // A gateway plain listener from an earlier migrate, so that a changed
    // `server.listen_plain` is followed.
    let to_gateway = LOOPBACK_ORIGINS.iter().any(|o| {
        target.strip_prefix(o).is_some_and(|rest| {
            rest.split_once('/')
                .is_some_and(|(port, _)| port.bytes().all(|b| b.is_ascii_digit()))
                && rest.ends_with(path)
                && rest.len() == rest.find('/').unwrap_or(0) + path.len()
        })
    });
    if !to_plugin && !to_gateway {
        return None;
    }
    let mut new = format!("{directive} {path} http://{plain}{path}");
    for word in rest {
        new.push(' ');
        new.push_str(word);
    }
    let current = line.split_whitespace().collect::<Vec<_>>().join(" ");
    (new != current).then_some(new)
}

/// Where a gateway plain listener is (`server.listen_plain` is loopback).
const LOOPBACK_ORIGINS: [&str; 3] = ["http://127.0.0.1:", "http://[::1]:", "http://localhost:"];

/// A `ProxyPass` line to the plugin that [`proxy_pass_target`] leaves alone.
fn plugin_line_left(line: &str) -> Option<String> {
    let (_, _, target, _) = proxy_pass(line)?;
    target
        .contains(MOUNT)
        .then(|| line.trim_end_matches(['\r', '\n']).trim().to_owned())
}

/// The installer's switch for the Ruby plugin (theforeman/puppet-foreman_proxy
/// ee5e0e42, `manifests/plugin/container_gateway.pp`: `Boolean $enabled = true`).
pub const HIERA_KEY: &str = "foreman_proxy::plugin::container_gateway::enabled";

/// Set [`HIERA_KEY`] to `false` in custom-hiera.yaml (`None`: no such file):
/// a top-level line for the key is replaced, or one is appended.
pub fn disable_in_hiera(text: Option<&str>) -> (String, Vec<Edit>) {
    let wanted = format!("{HIERA_KEY}: false");
    let Some(text) = text else {
        return (
            format!("---\n{wanted}\n"),
            vec![
                Edit {
                    line: 1,
                    old: None,
                    new: "---".into(),
                },
                Edit {
                    line: 2,
                    old: None,
                    new: wanted,
                },
            ],
        );
    };
    let mut out = String::with_capacity(text.len() + wanted.len() + 1);
    let mut edits = Vec::new();
    let mut found = false;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        match hiera_value(line) {
            Some(value) => {
                found = true;
                if value == "false" {
                    out.push_str(line);
                } else {
                    let ending = &line[line.trim_end_matches(['\r', '\n']).len()..];
                    edits.push(Edit {
                        line: i + 1,
                        old: Some(line.trim_end_matches(['\r', '\n']).to_owned()),
                        new: wanted.clone(),
                    });
                    out.push_str(&wanted);
                    out.push_str(if ending.is_empty() { "\n" } else { ending });
                }
            }
            None => out.push_str(line),
        }
    }
    if !found {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        edits.push(Edit {
            line: out.lines().count() + 1,
            old: None,
            new: wanted.clone(),
        });
        out.push_str(&wanted);
        out.push('\n');
    }
    (out, edits)
}

/// The value of a top-level `HIERA_KEY: value` line (key quoted or not),
/// without a trailing comment.
fn hiera_value(line: &str) -> Option<String> {
    let rest = [
        HIERA_KEY.to_owned(),
        format!("\"{HIERA_KEY}\""),
        format!("'{HIERA_KEY}'"),
    ]
    .iter()
    .find_map(|k| line.strip_prefix(k.as_str()).map(str::to_owned))?;
    let value = rest.trim_start().strip_prefix(':')?;
    let value = value.split(" #").next().unwrap_or_default().trim();
    Some(value.trim_matches(['"', '\'']).to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAGMENT: &str = "  ## Container Gateway\n  <Location \"/pulpcore_registry/v2/\">\n    Require expr %{tolower:%{SSL_CLIENT_S_DN_CN}} == \"capsule.example.com\"\n    RequestHeader set SSL_CLIENT_S_DN \"admin\"\n  </Location>\n  ProxyPass /v1/ https://capsule.example.com:9090/container_gateway/v1/\n  ProxyPassReverse /v1/ https://capsule.example.com:9090/container_gateway/v1/\n  ProxyPass /v2/ https://capsule.example.com:9090/container_gateway/v2/\n  ProxyPassReverse /v2/ https://capsule.example.com:9090/container_gateway/v2/\n  ProxyPass /index/ https://capsule.example.com:9090/container_gateway/index/\n  ProxyPassReverse /index/ https://capsule.example.com:9090/container_gateway/index/\n";

    #[test]
    fn vhost_lines_point_at_the_plain_listener_once() {
        let r = rewrite_vhost(FRAGMENT, "127.0.0.1:8080");
        assert_eq!(r.edits.len(), 7, "{:?}", r.edits);
        assert!(r.text.contains(&format!(
            "  {CERT_HEADER_LINE}\n  ProxyPass /v1/ http://127.0.0.1:8080/v1/\n"
        )));
        assert!(
            r.text
                .contains("  ProxyPassReverse /index/ http://127.0.0.1:8080/index/\n")
        );
        assert!(!r.text.contains("/container_gateway/"));
        // The Pulp location block is untouched.
        assert!(
            r.text
                .starts_with(&FRAGMENT[..FRAGMENT.find("  ProxyPass").unwrap_or(0)])
        );
        let again = rewrite_vhost(&r.text, "127.0.0.1:8080");
        assert!(again.edits.is_empty());
        assert_eq!(again.text, r.text);
    }

    #[test]
    fn other_plugin_paths_are_reported_not_changed() {
        let text = "ProxyPass /vr2/ https://p:9090/container_gateway/vr2/\nProxyPass /pulp/ https://p/pulp/\n";
        let r = rewrite_vhost(text, "127.0.0.1:8080");
        assert!(r.edits.is_empty());
        assert_eq!(r.text, text);
        assert_eq!(r.left.len(), 1);
    }

    #[test]
    fn hiera_flag_replaced_appended_or_kept() {
        let (t, e) = disable_in_hiera(Some("---\n# mine\nfoo: 1\n"));
        assert_eq!(t, format!("---\n# mine\nfoo: 1\n{HIERA_KEY}: false\n"));
        assert_eq!(e.len(), 1);
        let (t2, e2) = disable_in_hiera(Some(&t));
        assert_eq!((t2.as_str(), e2.len()), (t.as_str(), 0));
        let (t, e) = disable_in_hiera(Some(&format!("'{HIERA_KEY}': true # on\nx: 1")));
        assert_eq!(t, format!("{HIERA_KEY}: false\nx: 1"));
        assert_eq!(e.len(), 1);
        let (t, _) = disable_in_hiera(None);
        assert_eq!(t, format!("---\n{HIERA_KEY}: false\n"));
    }
}
