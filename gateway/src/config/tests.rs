use super::*;

#[test]
fn unknown_key_is_named() {
    let err = parse("[server]\nlisten = []\nbogus = 1\n").unwrap_err();
    assert_eq!(err.0[0].key, "server.bogus", "{err}");
    let err = parse("[nonsense]\nx = 1\n").unwrap_err();
    assert_eq!(err.0[0].key, "nonsense", "{err}");
}

#[test]
fn type_errors_name_the_line() {
    let err = parse("[cache]\nttl_secs = \"soon\"\n").unwrap_err();
    assert!(err.0[0].message.contains("line 2"), "{err}");
}

fn valid_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["cert.pem", "key.pem", "ca.pem"] {
        std::fs::write(dir.path().join(f), "x").unwrap();
    }
    std::fs::create_dir(dir.path().join("state")).unwrap();
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    dir
}

fn base(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
tls_cert = "{d}/cert.pem"
tls_key = "{d}/key.pem"
client_ca = "{d}/ca.pem"
public_url = "https://gw.example.com/"
[pulp]
endpoint = "http://127.0.0.1:1"
registry_path = "/pulpcore_registry/"
[central]
url = "http://127.0.0.1:2"
[state]
dir = "{d}/state"
[plugins]
dir = "{d}/plugins"
"#
    )
}

#[test]
fn a_complete_file_validates_and_normalises() {
    let dir = valid_dir();
    let cfg = validate(Path::new("x"), &parse(&base(dir.path())).unwrap()).unwrap();
    assert_eq!(cfg.server.public_url, "https://gw.example.com");
    assert_eq!(cfg.server.public_host, "gw.example.com");
    assert_eq!(
        cfg.pulp.registry_base(),
        "http://127.0.0.1:1/pulpcore_registry"
    );
    assert_eq!(
        cfg.central.endpoint("_catalog"),
        "http://127.0.0.1:2/v2/_catalog"
    );
    assert_eq!(
        cfg.plugins.library_path("rhsm-cert"),
        dir.path().join("plugins/librhsm_cert.so")
    );
    assert!(
        cfg.server
            .is_trusted_frontend(Some("127.0.0.1:5".parse().unwrap()))
    );
    assert!(
        !cfg.server
            .is_trusted_frontend(Some("10.0.0.1:5".parse().unwrap()))
    );
    assert!(!cfg.server.is_trusted_frontend(None));
    assert_eq!(cfg.pulp.max_index_bytes, 64 * 1024 * 1024);
}

#[test]
fn the_index_size_limit_is_in_mib_and_not_zero() {
    let dir = valid_dir();
    let with = |mb: &str| {
        base(dir.path()).replace(
            "registry_path = \"/pulpcore_registry/\"\n",
            &format!("registry_path = \"/pulpcore_registry/\"\nmax_index_mb = {mb}\n"),
        )
    };
    let cfg = validate(Path::new("x"), &parse(&with("200")).unwrap()).unwrap();
    assert_eq!(cfg.pulp.max_index_bytes, 200 * 1024 * 1024);
    let err = validate(Path::new("x"), &parse(&with("0")).unwrap()).unwrap_err();
    assert!(
        err.0.iter().any(|p| p.key == "pulp.max_index_mb"),
        "{err:?}"
    );
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let dir = valid_dir();
    let text = base(dir.path())
        .replace("127.0.0.1:0", "not-an-address")
        .replace("https://gw.example.com/", "ftp://x")
        .replace("/pulpcore_registry/", "../x")
        + "[cache]\nttl_secs = 0\n[admin]\nlisten = \"0.0.0.0:9464\"\n";
    let text = text.replace("ca.pem\"", "missing.pem\"");
    let err = validate(Path::new("x"), &parse(&text).unwrap()).unwrap_err();
    let keys: Vec<&str> = err.0.iter().map(|p| p.key.as_str()).collect();
    for key in [
        "server.listen",
        "server.public_url",
        "pulp.registry_path",
        "cache.ttl_secs",
        "admin.listen",
        "server.client_ca",
    ] {
        assert!(keys.contains(&key), "{key} missing from {keys:?}");
    }
}

#[test]
fn https_upstreams_need_their_ca_and_a_whole_client_pair() {
    let dir = valid_dir();
    let text = base(dir.path()).replace(
        "endpoint = \"http://127.0.0.1:1\"",
        &format!("endpoint = \"https://pulp.example.com\"\nssl_ca = \"\"\nssl_cert = \"{}/cert.pem\"\nssl_key = \"\"", dir.path().display()),
    );
    let err = validate(Path::new("x"), &parse(&text).unwrap()).unwrap_err();
    let keys: Vec<&str> = err.0.iter().map(|p| p.key.as_str()).collect();
    assert!(
        keys.contains(&"pulp.ssl_ca") && keys.contains(&"pulp.ssl_key"),
        "{keys:?}"
    );
}

#[test]
fn the_stream_idle_limit_defaults_to_a_minute_and_is_not_zero() {
    let dir = valid_dir();
    let cfg = validate(Path::new("x"), &parse(&base(dir.path())).unwrap()).unwrap();
    assert_eq!(cfg.pulp.stream_idle, Duration::from_secs(60));
    let with = |secs: &str| {
        base(dir.path()).replace(
            "registry_path = \"/pulpcore_registry/\"\n",
            &format!("registry_path = \"/pulpcore_registry/\"\nstream_idle_secs = {secs}\n"),
        )
    };
    let cfg = validate(Path::new("x"), &parse(&with("2")).unwrap()).unwrap();
    assert_eq!(cfg.pulp.stream_idle, Duration::from_secs(2));
    // 0 would read as "never cut": refused, naming the key.
    let err = validate(Path::new("x"), &parse(&with("0")).unwrap()).unwrap_err();
    assert!(
        err.0.iter().any(|p| p.key == "pulp.stream_idle_secs"),
        "{err:?}"
    );
    let err = parse(&with("-1")).unwrap_err();
    assert!(err.to_string().contains("line"), "{err}");
}

#[test]
fn the_shrink_limit_is_a_percentage_and_off_by_default() {
    let dir = valid_dir();
    let cfg = validate(Path::new("x"), &parse(&base(dir.path())).unwrap()).unwrap();
    assert_eq!(cfg.push_policy.max_shrink_percent, 100);
    let with = |p: &str| {
        format!(
            "{}[management]\nmax_shrink_percent = {p}\n",
            base(dir.path())
        )
    };
    let cfg = validate(Path::new("x"), &parse(&with("25")).unwrap()).unwrap();
    assert_eq!(cfg.push_policy.max_shrink_percent, 25);
    for bad in ["101", "1000"] {
        let err = validate(Path::new("x"), &parse(&with(bad)).unwrap()).unwrap_err();
        assert!(
            err.0
                .iter()
                .any(|p| p.key == "management.max_shrink_percent"),
            "{bad}: {err:?}"
        );
    }
}

#[test]
fn http2_limits_have_production_defaults_and_checked_ranges() {
    let dir = valid_dir();
    let with = |lines: &str| {
        base(dir.path()).replace(
            "public_url = \"https://gw.example.com/\"\n",
            &format!("public_url = \"https://gw.example.com/\"\n{lines}"),
        )
    };
    let cfg = validate(Path::new("x"), &parse(&with("")).unwrap()).unwrap();
    assert_eq!(
        cfg.server.http2,
        Http2Limits {
            max_header_list_bytes: 64 * 1024,
            max_concurrent_streams: 128,
            max_send_buffer_bytes: 64 * 1024,
        }
    );
    let cfg = validate(
        Path::new("x"),
        &parse(&with(
            "http2_max_header_list_kb = 8\nhttp2_max_concurrent_streams = 4\nhttp2_max_send_buffer_kb = 16\n",
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        cfg.server.http2,
        Http2Limits {
            max_header_list_bytes: 8 * 1024,
            max_concurrent_streams: 4,
            max_send_buffer_bytes: 16 * 1024,
        }
    );
    for (key, bad) in [
        ("http2_max_header_list_kb", "0"),
        ("http2_max_header_list_kb", "16385"),
        ("http2_max_concurrent_streams", "0"),
        ("http2_max_concurrent_streams", "1001"),
        ("http2_max_send_buffer_kb", "0"),
        ("http2_max_send_buffer_kb", "99999999999"),
    ] {
        let err = validate(
            Path::new("x"),
            &parse(&with(&format!("{key} = {bad}\n"))).unwrap(),
        )
        .unwrap_err();
        let full = format!("server.{key}");
        assert!(
            err.0
                .iter()
                .any(|p| p.key == full && p.message.starts_with("must be from 1 to ")),
            "{key} = {bad}: {err:?}"
        );
    }
}

#[test]
fn a_plain_listener_is_loopback_unless_remote_is_allowed() {
    let dir = valid_dir();
    let with = |plain: &str, remote: Option<bool>| {
        let mut text = base(dir.path()).replace(
            "listen = [\"127.0.0.1:0\"]\n",
            &format!("listen = [\"127.0.0.1:0\"]\nlisten_plain = [{plain}]\n"),
        );
        if let Some(remote) = remote {
            text = text.replace(
                "[pulp]\n",
                &format!("listen_plain_remote = {remote}\n[pulp]\n"),
            );
        }
        validate(Path::new("x"), &parse(&text).unwrap())
    };
    for ok in ["\"127.0.0.1:8080\"", "\"[::1]:8080\"", "\"127.0.0.2:8080\""] {
        assert!(with(ok, None).is_ok(), "{ok}");
    }
    for remote in ["\"0.0.0.0:8080\"", "\"192.0.2.10:8080\"", "\"[::]:8080\""] {
        let err = with(&format!("\"127.0.0.1:8080\", {remote}"), None).unwrap_err();
        let problem = err
            .0
            .iter()
            .find(|p| p.key == "server.listen_plain")
            .unwrap_or_else(|| panic!("{remote}: {err:?}"));
        assert!(
            problem.message.contains("not a loopback address"),
            "{problem:?}"
        );
        assert!(
            problem.message.contains("server.listen_plain_remote"),
            "{problem:?}"
        );
        assert!(with(remote, Some(true)).is_ok(), "{remote} allowed");
        assert!(
            with(remote, Some(false)).is_err(),
            "{remote} explicitly refused"
        );
    }
}

#[test]
fn token_revalidation_follows_the_ttl_unless_set_and_stays_within_the_stale_window() {
    let dir = valid_dir();
    let cfg = validate(Path::new("x"), &parse(&base(dir.path())).unwrap()).unwrap();
    assert_eq!(cfg.cache.token_revalidate, Duration::from_secs(300));
    let with = |v: &str| format!("{}[cache]\n{v}\n", base(dir.path()));
    let cfg = validate(
        Path::new("x"),
        &parse(&with("ttl_secs = 30\nstale_if_error_secs = 60")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        cfg.cache.token_revalidate,
        Duration::from_secs(30),
        "follows the ttl"
    );
    let cfg = validate(
        Path::new("x"),
        &parse(&with("token_revalidate_secs = 2")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg.cache.token_revalidate, Duration::from_secs(2));
    for bad in [
        "token_revalidate_secs = 0",
        "token_revalidate_secs = 3601",
        "stale_if_error_secs = 400\ntoken_revalidate_secs = 401",
    ] {
        let err = validate(Path::new("x"), &parse(&with(bad)).unwrap()).unwrap_err();
        assert!(
            err.0.iter().any(|p| p.key == "cache.token_revalidate_secs"),
            "{bad}: {err:?}"
        );
    }
}
