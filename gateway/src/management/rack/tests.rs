//! Expected values follow Rack's own specs (`test/spec_utils.rb`,
//! "parse nested query strings correctly" and "raise an exception if the
//! params are too deep / of conflicting types"), plus Katello's payloads.

use super::*;

fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}

fn arr(items: Vec<Value>) -> Value {
    Value::Array(items)
}

fn obj(pairs: Vec<(&str, Value)>) -> Value {
    Value::Object(object(pairs))
}

fn object(pairs: Vec<(&str, Value)>) -> Object {
    let mut o = Object::new();
    for (k, v) in pairs {
        o.insert(k, v);
    }
    o
}

fn parse(q: &str) -> Object {
    match parse_nested_query(q.as_bytes(), Limits::default()) {
        Ok(o) => o,
        Err(e) => panic!("{q}: {e}"),
    }
}

fn parse_err(q: &str) -> RackError {
    match parse_nested_query(q.as_bytes(), Limits::default()) {
        Ok(o) => panic!("{q}: expected an error, got {o:?}"),
        Err(e) => e,
    }
}

#[track_caller]
fn check(q: &str, expected: Vec<(&str, Value)>) {
    assert_eq!(parse(q), object(expected), "{q}");
}

#[test]
fn scalars_and_bare_keys() {
    check("foo", vec![("foo", Value::Null)]);
    check("foo=", vec![("foo", s(""))]);
    check("foo=bar", vec![("foo", s("bar"))]);
    check("foo=\"bar\"", vec![("foo", s("\"bar\""))]);
    check("foo=bar&foo=quux", vec![("foo", s("quux"))]);
    check("foo&foo=", vec![("foo", s(""))]);
    check("foo=1&bar=2", vec![("foo", s("1")), ("bar", s("2"))]);
    check("&foo=1&&bar=2", vec![("foo", s("1")), ("bar", s("2"))]);
    check("foo&bar=", vec![("foo", Value::Null), ("bar", s(""))]);
    check("foo=bar&baz=", vec![("foo", s("bar")), ("baz", s(""))]);
    check("a=b=c", vec![("a", s("b=c"))]);
    check("", vec![]);
}

#[test]
fn percent_decoding_and_plus() {
    check(
        "my+weird+field=q1%212%22%27w%245%267%2Fz8%29%3F",
        vec![("my weird field", s("q1!2\"'w$5&7/z8)?"))],
    );
    check(
        "a=b&pid%3D1234=1023",
        vec![("a", s("b")), ("pid=1234", s("1023"))],
    );
    // Brackets may arrive escaped; Rack decodes before nesting.
    check(
        "a%5B%5D=1&a%5B%5D=2",
        vec![("a", arr(vec![s("1"), s("2")]))],
    );
    check(
        "users[][alice%40example.com]",
        vec![(
            "users",
            arr(vec![obj(vec![("alice@example.com", Value::Null)])]),
        )],
    );
    // Rack's separator is `&` followed by optional spaces.
    check("a=1&  b=2", vec![("a", s("1")), ("b", s("2"))]);
    check("a=%41%2b%2B+b", vec![("a", s("A++ b"))]);
}

#[test]
fn arrays() {
    check("foo[]", vec![("foo", arr(vec![Value::Null]))]);
    check("foo[]=", vec![("foo", arr(vec![s("")]))]);
    check("foo[]=bar", vec![("foo", arr(vec![s("bar")]))]);
    check("foo[]=bar&foo", vec![("foo", Value::Null)]);
    check(
        "foo[]=bar&foo[",
        vec![("foo", arr(vec![s("bar")])), ("foo[", Value::Null)],
    );
    check(
        "foo[]=bar&foo[=baz",
        vec![("foo", arr(vec![s("bar")])), ("foo[", s("baz"))],
    );
    check(
        "foo[]=bar&foo[]",
        vec![("foo", arr(vec![s("bar"), Value::Null]))],
    );
    check(
        "foo[]=bar&foo[]=",
        vec![("foo", arr(vec![s("bar"), s("")]))],
    );
    check("foo[]=1&foo[]=2", vec![("foo", arr(vec![s("1"), s("2")]))]);
    check(
        "foo=bar&baz[]=1&baz[]=2&baz[]=3",
        vec![
            ("foo", s("bar")),
            ("baz", arr(vec![s("1"), s("2"), s("3")])),
        ],
    );
    check(
        "foo[]=bar&baz[]=1&baz[]=2&baz[]=3",
        vec![
            ("foo", arr(vec![s("bar")])),
            ("baz", arr(vec![s("1"), s("2"), s("3")])),
        ],
    );
    // A bare key resets an array to nil; `||=` then starts a new one.
    check("foo[]=1&foo&foo[]=2", vec![("foo", arr(vec![s("2")]))]);
    check("a[][]=1", vec![("a", arr(vec![arr(vec![s("1")])]))]);
    check("a[][]", vec![("a", arr(vec![Value::Null]))]);
}

#[test]
fn hashes() {
    check(
        "x[y][z]",
        vec![("x", obj(vec![("y", obj(vec![("z", Value::Null)]))]))],
    );
    check(
        "x[y][z]=1",
        vec![("x", obj(vec![("y", obj(vec![("z", s("1"))]))]))],
    );
    check(
        "x[y][z][]=1",
        vec![("x", obj(vec![("y", obj(vec![("z", arr(vec![s("1")]))]))]))],
    );
    check(
        "x[y][z]=1&x[y][z]=2",
        vec![("x", obj(vec![("y", obj(vec![("z", s("2"))]))]))],
    );
    check(
        "x[y][z][]=1&x[y][z][]=2",
        vec![(
            "x",
            obj(vec![("y", obj(vec![("z", arr(vec![s("1"), s("2")]))]))]),
        )],
    );
    // Rack 2 strips brackets before the first key.
    check("[foo]=1", vec![("foo", s("1"))]);
    check("x]=1", vec![("x", s("1"))]);
}

/// Rack drops a parameter whose name has no key and keeps a bad escape
/// literally (its parser raises only in some versions); either turned a
/// garbled push into an empty one. Here each is an error naming the
/// parameter.
#[test]
fn garbled_parameters_are_errors() {
    let no_name = |q: &str, index: usize| match parse_err(q) {
        RackError::NoName { index: i, param } => {
            assert_eq!(i, index, "{q}");
            param
        }
        e => panic!("{q}: expected NoName, got {e:?}"),
    };
    assert_eq!(no_name("=value", 1), "=value");
    assert_eq!(no_name("a=1&[]=1", 2), "[]=1");
    assert_eq!(no_name("[", 1), "[");
    assert_eq!(no_name("a[[]=1", 1), "a[[]=1");
    assert_eq!(no_name("repositories[][[[=", 1), "repositories[][[[=");
    assert_eq!(no_name("a[b][][]]]=1&x=1&x[", 1), "a[b][][]]]=1");
    // The body Katello's sync was once answered 200 for, applied as empty.
    assert!(matches!(
        parse_err("repositories[][[[=&&==%ZZ&="),
        RackError::NoName { index: 1, .. }
    ));

    for (q, index) in [
        ("a=%zz", 1),
        ("a=1&b%=1", 2),
        ("a=%4", 1),
        ("a=%", 1),
        ("%g0", 1),
    ] {
        match parse_err(q) {
            RackError::InvalidEscape { index: i, .. } => assert_eq!(i, index, "{q}"),
            e => panic!("{q}: expected InvalidEscape, got {e:?}"),
        }
    }
    for q in ["a=%ff", "a%c3=1", "a=%ed%a0%80"] {
        assert!(
            matches!(parse_err(q), RackError::NotUtf8 { index: 1, .. }),
            "{q}"
        );
    }
    let e = parse_err("a=1&b=%ZZ").to_string();
    assert!(e.contains("invalid %-encoding in parameter 2"), "{e}");
    // Nested arrays keep their meaning.
    check("a[][]=1", vec![("a", arr(vec![arr(vec![s("1")])]))]);
    check("a[][]", vec![("a", arr(vec![Value::Null]))]);
}

#[test]
fn hashes_inside_arrays() {
    let y = |items: Vec<Value>| vec![("x", obj(vec![("y", arr(items))]))];
    check("x[y][][z]=1", y(vec![obj(vec![("z", s("1"))])]));
    check(
        "x[y][][z][]=1",
        y(vec![obj(vec![("z", arr(vec![s("1")]))])]),
    );
    check(
        "x[y][][z]=1&x[y][][w]=2",
        y(vec![obj(vec![("z", s("1")), ("w", s("2"))])]),
    );
    check(
        "x[y][][v][w]=1",
        y(vec![obj(vec![("v", obj(vec![("w", s("1"))]))])]),
    );
    check(
        "x[y][][z]=1&x[y][][v][w]=2",
        y(vec![obj(vec![
            ("z", s("1")),
            ("v", obj(vec![("w", s("2"))])),
        ])]),
    );
    check(
        "x[y][][z]=1&x[y][][z]=2",
        y(vec![obj(vec![("z", s("1"))]), obj(vec![("z", s("2"))])]),
    );
    check(
        "x[y][][z]=1&x[y][][w]=a&x[y][][z]=2&x[y][][w]=3",
        y(vec![
            obj(vec![("z", s("1")), ("w", s("a"))]),
            obj(vec![("z", s("2")), ("w", s("3"))]),
        ]),
    );
    check(
        "x[][y]=1&x[][z][w]=a&x[][y]=2&x[][z][w]=b",
        vec![(
            "x",
            arr(vec![
                obj(vec![("y", s("1")), ("z", obj(vec![("w", s("a"))]))]),
                obj(vec![("y", s("2")), ("z", obj(vec![("w", s("b"))]))]),
            ]),
        )],
    );
    check(
        "x[][z][w]=a&x[][y]=1&x[][z][w]=b&x[][y]=2",
        vec![(
            "x",
            arr(vec![
                obj(vec![("z", obj(vec![("w", s("a"))])), ("y", s("1"))]),
                obj(vec![("z", obj(vec![("w", s("b"))])), ("y", s("2"))]),
            ]),
        )],
    );
    // Nested keys count as held only when fully present.
    check(
        "data[books][][data][page]=1&data[books][][data][page]=2",
        vec![(
            "data",
            obj(vec![(
                "books",
                arr(vec![
                    obj(vec![("data", obj(vec![("page", s("1"))]))]),
                    obj(vec![("data", obj(vec![("page", s("2"))]))]),
                ]),
            )]),
        )],
    );
}

#[test]
fn conflicting_types_are_errors() {
    assert_eq!(
        parse_err("x[y]=1&x[y]z=2"),
        RackError::Type {
            expected: "Hash",
            got: "String",
            param: "y".into()
        }
    );
    assert_eq!(
        parse_err("x[y]=1&x[]=1"),
        RackError::Type {
            expected: "Array",
            got: "Hash",
            param: "x".into()
        }
    );
    assert_eq!(
        parse_err("x[y]=1&x[y][][w]=2"),
        RackError::Type {
            expected: "Array",
            got: "String",
            param: "y".into()
        }
    );
    assert_eq!(
        parse_err("hosts=a&hosts[][uuid]=b").to_string(),
        "expected Array (got String) for param `hosts'"
    );
}

#[test]
fn depth_and_count_limits() {
    let deep = format!("a{}=1", "[b]".repeat(40));
    assert!(matches!(
        parse_err(&deep),
        RackError::TooDeep { limit: 32, .. }
    ));
    let ok = format!("a{}=1", "[b]".repeat(30));
    parse(&ok);
    let deep_arrays = format!("a{}=1", "[][b]".repeat(40));
    assert!(matches!(parse_err(&deep_arrays), RackError::TooDeep { .. }));
    let many = "a[]=1&".repeat(11);
    let r = parse_nested_query(
        many.as_bytes(),
        Limits {
            max_depth: 32,
            max_params: 10,
        },
    );
    assert_eq!(r, Err(RackError::TooManyParams { limit: 10 }));
    let long_name = format!("{}=1", "k".repeat(10_000));
    let e = RackError::TooDeep {
        param: "k".repeat(10_000),
        limit: 1,
    }
    .to_string();
    assert!(e.len() < 200, "messages do not echo whole names");
    parse(&long_name);
}

#[test]
fn arbitrary_input_never_panics() {
    // A small deterministic generator over the characters that matter.
    let alphabet = b"[]&=a%+ 5Bb\xff";
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..20_000 {
        let len = (seed % 40) as usize;
        let mut input = Vec::with_capacity(len);
        for _ in 0..len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            input.push(alphabet[(seed % alphabet.len() as u64) as usize]);
        }
        let _ = parse_nested_query(&input, Limits::default());
    }
}

// ---- Katello's payloads, exactly as rest-client encodes them ----

#[test]
fn katello_repository_list() {
    check(
        "repositories[][repository]=org%2Fa&repositories[][auth_required]=true&repositories[][repository]=org%2Fb&repositories[][auth_required]=false",
        vec![(
            "repositories",
            arr(vec![
                obj(vec![
                    ("repository", s("org/a")),
                    ("auth_required", s("true")),
                ]),
                obj(vec![
                    ("repository", s("org/b")),
                    ("auth_required", s("false")),
                ]),
            ]),
        )],
    );
    check("repositories", vec![("repositories", Value::Null)]);
}

#[test]
fn katello_host_mapping_merges_hosts_into_one_hash() {
    let q = "hosts[][u1][][repository]=a&hosts[][u1][][auth_required]=true\
             &hosts[][u1][][repository]=b&hosts[][u1][][auth_required]=true\
             &hosts[][u2]\
             &hosts[][u3][][repository]=a&hosts[][u3][][auth_required]=true";
    let entry = |r: &str| obj(vec![("repository", s(r)), ("auth_required", s("true"))]);
    check(
        q,
        vec![(
            "hosts",
            arr(vec![obj(vec![
                ("u1", arr(vec![entry("a"), entry("b")])),
                ("u2", Value::Null),
                ("u3", arr(vec![entry("a")])),
            ])]),
        )],
    );
}

#[test]
fn katello_update_hosts_with_nil_and_blank_uuids() {
    check(
        "hosts[][uuid]=u1&hosts[][uuid]&hosts[][uuid]=&hosts[][uuid]=u2",
        vec![(
            "hosts",
            arr(vec![
                obj(vec![("uuid", s("u1"))]),
                obj(vec![("uuid", Value::Null)]),
                obj(vec![("uuid", s(""))]),
                obj(vec![("uuid", s("u2"))]),
            ]),
        )],
    );
}

#[test]
fn katello_nil_uuid_in_a_mapping_leaves_entry_keys_in_the_hash() {
    // `{nil => [...]}` becomes `hosts[][][][repository]=..`: Rack folds the
    // entry's keys into the host hash itself.
    let q = "hosts[][u1][][repository]=a&hosts[][u1][][auth_required]=true\
             &hosts[][][][repository]=b&hosts[][][][auth_required]=true\
             &hosts[][u2][][repository]=c&hosts[][u2][][auth_required]=true";
    let entry = |r: &str| obj(vec![("repository", s(r)), ("auth_required", s("true"))]);
    check(
        q,
        vec![(
            "hosts",
            arr(vec![obj(vec![
                ("u1", arr(vec![entry("a")])),
                ("repository", s("b")),
                ("auth_required", s("true")),
                ("u2", arr(vec![entry("c")])),
            ])]),
        )],
    );
    // First in the body, with no repositories: a nil element.
    check(
        "hosts[][]&hosts[][u1]",
        vec![(
            "hosts",
            arr(vec![Value::Null, obj(vec![("u1", Value::Null)])]),
        )],
    );
}

#[test]
fn katello_user_with_no_repositories() {
    check(
        "users[][admin][][repository]=a&users[][admin][][auth_required]=true&users[][bob]",
        vec![(
            "users",
            arr(vec![obj(vec![
                (
                    "admin",
                    arr(vec![obj(vec![
                        ("repository", s("a")),
                        ("auth_required", s("true")),
                    ])]),
                ),
                ("bob", Value::Null),
            ])]),
        )],
    );
}

#[test]
fn ten_thousand_hosts_in_one_hash() {
    let mut q = String::new();
    for h in 0..10_000 {
        for r in 0..5 {
            q.push_str(&format!("hosts[][host-{h}][][repository]=org%2Frepo{r}&hosts[][host-{h}][][auth_required]=true&"));
        }
    }
    let started = std::time::Instant::now();
    let parsed = parse(&q);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let Some(Value::Array(items)) = parsed.get("hosts") else {
        panic!("hosts")
    };
    assert_eq!(items.len(), 1);
    let Value::Object(hosts) = &items[0] else {
        panic!("hash")
    };
    assert_eq!(hosts.len(), 10_000);
    let Some(Value::Array(entries)) = hosts.get("host-9999") else {
        panic!("host-9999")
    };
    assert_eq!(entries.len(), 5);
}

// ---- JSON ----

#[test]
fn json_uses_the_same_model() {
    let v: Value = serde_json::from_str(
        r#"{"repositories":[{"repository":"a","auth_required":true},{"repository":"b","auth_required":"false"}],"n":1.5,"z":null,"k":2,"k":3}"#,
    )
    .unwrap();
    assert_eq!(
        v,
        obj(vec![
            (
                "repositories",
                arr(vec![
                    obj(vec![("repository", s("a")), ("auth_required", s("true"))]),
                    obj(vec![("repository", s("b")), ("auth_required", s("false"))]),
                ]),
            ),
            ("n", s("1.5")),
            ("z", Value::Null),
            ("k", s("3")),
        ])
    );
}

#[test]
fn object_keeps_order_when_indexed() {
    let mut o = Object::new();
    for i in 0..20 {
        o.insert(&format!("k{i}"), s(&i.to_string()));
    }
    o.insert("k3", s("again"));
    assert_eq!(o.len(), 20);
    assert_eq!(o.get("k3"), Some(&s("again")));
    assert_eq!(o.iter().nth(3).map(|(k, _)| k), Some("k3"));
    assert!(o.contains_key("k19") && !o.contains_key("k20"));
}
