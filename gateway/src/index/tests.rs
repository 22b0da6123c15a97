use std::collections::HashSet;
use std::io::Read as _;

use bytes::Bytes;
use serde_json::Value;
use serde_json::value::RawValue;

use super::synth::{self, Rng, Spec};
use super::*;

const PULP_SAMPLE: &str = include_str!("testdata/pulp-index-static.json");

fn parse(s: &str) -> UpstreamIndex {
    match UpstreamIndex::parse(Bytes::copy_from_slice(s.as_bytes())) {
        Ok(index) => index,
        Err(e) => panic!("parse failed: {e}"),
    }
}

fn parse_err(s: &[u8]) -> IndexError {
    match UpstreamIndex::parse(Bytes::copy_from_slice(s)) {
        Ok(index) => panic!("parsed to {} entries", index.len()),
        Err(e) => e,
    }
}

fn all(_: &str) -> bool {
    true
}

fn none(_: &str) -> bool {
    false
}

fn body_str(f: &Filtered) -> &str {
    std::str::from_utf8(&f.body).expect("output is UTF-8")
}

/// The raw `Results` elements of an index body.
fn raw_results(body: &str) -> Vec<&str> {
    #[derive(serde::Deserialize)]
    struct Top<'a> {
        #[serde(rename = "Results", borrow)]
        results: Vec<&'a RawValue>,
    }
    let top: Top<'_> = serde_json::from_str(body).expect("index parses");
    top.results.into_iter().map(RawValue::get).collect()
}

fn raw_images(entry: &str) -> Vec<&str> {
    #[derive(serde::Deserialize)]
    struct E<'a> {
        #[serde(rename = "Images", borrow)]
        images: Vec<&'a RawValue>,
    }
    let e: E<'_> = serde_json::from_str(entry).expect("entry parses");
    e.images.into_iter().map(RawValue::get).collect()
}

fn names_of(f: &Filtered) -> Vec<String> {
    let v: Value = serde_json::from_slice(&f.body).expect("output is JSON");
    v["Results"]
        .as_array()
        .expect("Results is an array")
        .iter()
        .map(|e| e["Name"].as_str().expect("Name").to_owned())
        .collect()
}

fn image(digest: &str, flatpak_ref: Option<&str>, arch: &str) -> String {
    let labels = match flatpak_ref {
        Some(r) => format!(r#","Labels":{{"org.flatpak.ref":"{r}"}}"#),
        None => String::new(),
    };
    format!(
        r#"{{"Tags":["latest"],"Digest":"sha256:{digest}","MediaType":"application/vnd.oci.image.manifest.v1+json","OS":"linux","Architecture":"{arch}"{labels}}}"#
    )
}

fn entry(name: &str, images: &[String]) -> String {
    format!(r#"{{"Name":"{name}","Images":[{}]}}"#, images.join(","))
}

fn index_of(entries: &[String]) -> String {
    format!(
        r#"{{"Registry":"http://pulp:24816","Results":[{}]}}"#,
        entries.join(",")
    )
}

// ---- the real Pulp sample ------------------------------------------------------

#[test]
fn pulp_sample_round_trips_byte_for_byte() {
    let index = parse(PULP_SAMPLE);
    assert_eq!(index.len(), 2);
    assert_eq!(
        index.names().collect::<Vec<_>>(),
        ["org/flatpak/platform", "org/flatpak/hello"]
    );

    let out = index.filter("https://gw.example.com/pulpcore_registry", &all);
    assert_eq!((out.kept, out.dropped), (2, 0));
    let text = body_str(&out);
    assert!(
        text.starts_with(r#"{"Registry":"https://gw.example.com/pulpcore_registry/","Results":["#),
        "{text}"
    );
    assert_eq!(raw_results(text), raw_results(PULP_SAMPLE));
    assert!(text.contains("\"org.flatpak.subject\":\"Hello app – ünïcödé ✓\""));
    assert!(!text.contains("127.0.0.1:52455"));

    // With the Registry swapped back, the output is the upstream body itself.
    let back = index.filter("http://127.0.0.1:52455", &all);
    assert_eq!(
        body_str(&back).replacen("52455/", "52455", 1),
        PULP_SAMPLE.trim_end()
    );
}

#[test]
fn pulp_sample_refs_carry_runtime_and_sdk() {
    let index = parse(PULP_SAMPLE);
    let refs: Vec<_> = index.refs().collect();
    assert_eq!(refs.len(), 2);
    let (name, hello) = refs[1];
    assert_eq!(name, "org/flatpak/hello");
    assert_eq!(
        hello,
        &FlatpakRef {
            flatpak_ref: "app/org.test.Hello/x86_64/stable".into(),
            architecture: "amd64".into(),
            runtime: Some("org.test.Platform/x86_64/1".into()),
            sdk: Some("org.test.Platform/x86_64/1".into()),
        }
    );
    assert_eq!(refs[0].0, "org/flatpak/platform");
    assert_eq!(refs[0].1.flatpak_ref, "runtime/org.test.Platform/x86_64/1");
}

#[test]
fn visible_subset_keeps_only_visible_entries_verbatim() {
    let index = parse(PULP_SAMPLE);
    let out = index.filter("https://gw/", &|n: &str| n == "org/flatpak/hello");
    assert_eq!((out.kept, out.dropped), (1, 1));
    assert_eq!(names_of(&out), ["org/flatpak/hello"]);
    assert_eq!(raw_results(body_str(&out)), [raw_results(PULP_SAMPLE)[1]]);
}

#[test]
fn nothing_visible_gives_an_empty_results_array() {
    let out = parse(PULP_SAMPLE).filter("https://gw/", &none);
    assert_eq!(body_str(&out), r#"{"Registry":"https://gw/","Results":[]}"#);
    assert_eq!((out.kept, out.dropped), (0, 2));

    for body in [r#"{"Registry":"x","Results":null}"#, r#"{"Results":[]}"#] {
        let index = parse(body);
        assert!(index.is_empty());
        let out = index.filter("https://gw/", &all);
        assert_eq!(body_str(&out), r#"{"Registry":"https://gw/","Results":[]}"#);
    }
}

#[test]
fn visible_is_asked_once_per_servable_entry() {
    let asked = std::cell::RefCell::new(Vec::new());
    let index = parse(&index_of(&[
        entry("a", &[image("1", None, "amd64")]),
        r#"{"Images":[]}"#.to_owned(),
        entry("b", &[]),
    ]));
    index.filter("https://gw/", &|n: &str| {
        asked.borrow_mut().push(n.to_owned());
        true
    });
    assert_eq!(asked.into_inner(), ["a", "b"]);
}

// ---- malformed upstream data ---------------------------------------------------

#[test]
fn malformed_entries_are_dropped() {
    let good = entry("good", &[image("1", Some("app/a/x86_64/stable"), "amd64")]);
    let body = index_of(&[
        r#""just a string""#.to_owned(),
        r#"{"Images":[]}"#.to_owned(),
        r#"{"Name":42,"Images":[]}"#.to_owned(),
        r#"{"Name":null,"Images":[]}"#.to_owned(),
        r#"{"Name":"twice","Name":"other","Images":[]}"#.to_owned(),
        r#"{"Name":"imgs-twice","Images":[],"Images":[]}"#.to_owned(),
        r#"{"Name":"imgs-string","Images":"nope"}"#.to_owned(),
        r#"{"Name":"imgs-object","Images":{"a":1}}"#.to_owned(),
        good.clone(),
    ]);
    let index = parse(&body);
    assert_eq!(index.len(), 9);
    assert_eq!(index.names().collect::<Vec<_>>(), ["good"]);
    let out = index.filter("https://gw/", &all);
    assert_eq!((out.kept, out.dropped), (1, 8));
    assert_eq!(raw_results(body_str(&out)), [good.as_str()]);
}

#[test]
fn malformed_images_are_removed_and_the_entry_rebuilt_from_raw_slices() {
    let good1 = image("1", Some("app/a/x86_64/stable"), "amd64");
    let good2 = image("2", None, "arm64");
    let bad = [
        r#"{"MediaType":"m","OS":"linux","Architecture":"amd64"}"#.to_owned(),
        r#"{"Digest":"md5:00","MediaType":"m","OS":"linux","Architecture":"amd64"}"#.to_owned(),
        r#"{"Digest":"sha256:3","MediaType":null,"OS":"linux","Architecture":"amd64"}"#.to_owned(),
        r#"{"Digest":"sha256:4","MediaType":"m","OS":"linux"}"#.to_owned(),
        r#"{"Digest":"sha256:5","MediaType":"m","OS":"linux","Architecture":7}"#.to_owned(),
        r#"{"Digest":"sha256:6","MediaType":"m","OS":"linux","Architecture":"amd64","Labels":{"n":1}}"#.to_owned(),
        r#"{"Digest":"sha256:7","MediaType":"m","OS":"linux","Architecture":"amd64","Labels":[]}"#.to_owned(),
        r#"{"Digest":"sha256:8","MediaType":"m","OS":"linux","Architecture":"amd64","Tags":"latest"}"#.to_owned(),
        r#"{"Digest":"sha256:9","MediaType":"m","OS":"linux","Architecture":"amd64","Annotations":{"a":false}}"#.to_owned(),
        r#"{"Digest":"sha256:a","Digest":"sha256:b","MediaType":"m","OS":"linux","Architecture":"amd64"}"#.to_owned(),
        r#"{"Digest":"sha256:c","MediaType":"m","OS":"linux","Architecture":"amd64","Labels":{"org.flatpak.ref":"x","org.flatpak.ref":"y"}}"#.to_owned(),
        r#"["not","an","object"]"#.to_owned(),
        "null".to_owned(),
    ];
    let mut images = vec![good1.clone()];
    images.extend(bad.iter().cloned());
    images.push(good2.clone());
    let body = index_of(&[format!(
        r#"{{"Before":{{"k":[1,2]}}, "Name" : "repo","Images":[{}],"After":"ü"}}"#,
        images.join(" , ")
    )]);
    let out = parse(&body).filter("https://gw/", &all);
    assert_eq!((out.kept, out.dropped), (1, 0));
    assert_eq!(
        raw_results(body_str(&out)),
        [format!(
            r#"{{"Before":{{"k":[1,2]}},"Name":"repo","Images":[{good1},{good2}],"After":"ü"}}"#
        )
        .as_str()]
    );
}

#[test]
fn well_formed_optional_members_keep_an_entry_verbatim() {
    let img = r#"{"Digest":"sha256:1","MediaType":"m","OS":"linux","Architecture":"amd64","Labels":null,"Annotations":{"a":"b"},"Tags":null,"Extra":[{"deep":true}]}"#;
    let e = format!(r#"{{ "Name": "r", "Images": [ {img} ], "Lists": null }}"#);
    let out = parse(&index_of(std::slice::from_ref(&e))).filter("https://gw/", &all);
    assert_eq!(raw_results(body_str(&out)), [e.as_str()]);
}

#[test]
fn an_entry_whose_images_are_all_malformed_is_dropped() {
    let body = index_of(&[
        entry("bad", &[r#"{"Digest":"sha256:1"}"#.to_owned()]),
        entry("ok", &[image("2", None, "amd64")]),
    ]);
    let out = parse(&body).filter("https://gw/", &all);
    assert_eq!(names_of(&out), ["ok"]);
    assert_eq!((out.kept, out.dropped), (1, 1));
}

#[test]
fn null_or_missing_images_become_an_empty_array() {
    let body = index_of(&[
        r#"{"Name":"null","Images":null,"Lists":[]}"#.to_owned(),
        r#"{"Name":"missing"}"#.to_owned(),
        r#"{"Name":"empty","Images":[]}"#.to_owned(),
    ]);
    let out = parse(&body).filter("https://gw/", &all);
    assert_eq!(
        raw_results(body_str(&out)),
        [
            r#"{"Name":"null","Images":[],"Lists":[]}"#,
            r#"{"Name":"missing","Images":[]}"#,
            r#"{"Name":"empty","Images":[]}"#,
        ]
    );
}

#[test]
fn lists_are_kept_when_well_formed_and_omitted_otherwise() {
    let img = image("1", Some("app/a/x86_64/stable"), "amd64");
    let good_lists = format!(
        r#"[{{"Tags":["latest"],"Digest":"sha256:f","MediaType":"application/vnd.oci.image.index.v1+json","Images":[{img}]}}]"#
    );
    let ok = format!(r#"{{"Name":"ok","Images":null,"Lists":{good_lists}}}"#);
    let bad = [
        r#"[{"Digest":"sha256:f","Images":[]}]"#,
        r#"[{"Digest":"sha256:f","MediaType":"m","Images":null}]"#,
        r#"[{"Digest":"sha256:f","MediaType":"m","Images":[{"Digest":"sha256:1"}]}]"#,
        r#"[{"Digest":"sha256:f","MediaType":"m","Images":[],"Tags":"x"}]"#,
        r#"["x"]"#,
        r#"{}"#,
    ];
    let mut entries = vec![ok];
    for (i, lists) in bad.iter().enumerate() {
        entries.push(format!(
            r#"{{"Name":"bad{i}","Lists":{lists},"Images":[{img}]}}"#
        ));
    }
    let out = parse(&index_of(&entries)).filter("https://gw/", &all);
    let got = raw_results(body_str(&out));
    assert_eq!(
        got[0],
        format!(r#"{{"Name":"ok","Images":[],"Lists":{good_lists}}}"#)
    );
    // The first `bad` entry keeps its image; the rest lose it to deduplication.
    assert_eq!(got[1], format!(r#"{{"Name":"bad0","Images":[{img}]}}"#));
    assert_eq!(got.len(), 2);
}

#[test]
fn escaped_keys_and_names_are_understood_and_copied_raw() {
    let body = index_of(&[format!(
        r#"{{"N\u0061me":"caf\u00e9/app","\u0045xtra\"":1,"Images":[{},{{"bad":1}}]}}"#,
        image("1", None, "amd64")
    )]);
    let index = parse(&body);
    assert_eq!(index.names().collect::<Vec<_>>(), ["café/app"]);
    let out = index.filter("https://gw/", &|n: &str| n == "café/app");
    assert_eq!(
        raw_results(body_str(&out)),
        [format!(
            r#"{{"N\u0061me":"caf\u00e9/app","\u0045xtra\"":1,"Images":[{}]}}"#,
            image("1", None, "amd64")
        )
        .as_str()]
    );
}

#[test]
fn registry_url_is_escaped_and_gets_a_trailing_slash() {
    let index = parse(r#"{"Results":[]}"#);
    let out = index.filter("https://gw/a\"b", &all);
    let v: Value = serde_json::from_slice(&out.body).expect("JSON");
    assert_eq!(v["Registry"], "https://gw/a\"b/");
    let out = index.filter("", &all);
    assert_eq!(body_str(&out), r#"{"Registry":"/","Results":[]}"#);
}

// ---- deduplication -------------------------------------------------------------

#[test]
fn duplicate_refs_first_visible_entry_wins() {
    let r = Some("app/org.test.Hello/x86_64/stable");
    let a = entry("a", &[image("1", r, "amd64")]);
    let b_img2 = image("3", Some("app/org.test.Other/x86_64/stable"), "amd64");
    let b = entry("b", &[image("2", r, "amd64"), b_img2.clone()]);
    let c = entry("c", &[image("4", r, "amd64")]);
    let index = parse(&index_of(&[a.clone(), b.clone(), c.clone()]));

    let out = index.filter("https://gw/", &all);
    assert_eq!(
        raw_results(body_str(&out)),
        [
            a.as_str(),
            entry("b", std::slice::from_ref(&b_img2)).as_str()
        ]
    );
    assert_eq!((out.kept, out.dropped), (2, 1));

    // When the first holder is not visible, the next visible one keeps the ref.
    let out = index.filter("https://gw/", &|n: &str| n != "a");
    assert_eq!(raw_results(body_str(&out)), [b.as_str()]);
    let out = index.filter("https://gw/", &|n: &str| n == "c");
    assert_eq!(raw_results(body_str(&out)), [c.as_str()]);
}

#[test]
fn dedupe_key_is_ref_and_architecture_and_ignores_unlabelled_images() {
    let r = Some("app/org.test.Hello/x86_64/stable");
    let entries = [
        entry("amd", &[image("1", r, "amd64")]),
        entry("arm", &[image("2", r, "arm64")]),
        entry("plain1", &[image("3", None, "amd64")]),
        entry("plain2", &[image("3", None, "amd64")]),
        entry(
            "twice",
            &[
                image("4", Some("x"), "amd64"),
                image("5", Some("x"), "amd64"),
            ],
        ),
    ];
    let out = parse(&index_of(&entries)).filter("https://gw/", &all);
    let got = raw_results(body_str(&out));
    assert_eq!(
        got[..4],
        entries[..4].iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(got[4], entry("twice", &[image("4", Some("x"), "amd64")]));
}

#[test]
fn malformed_images_do_not_claim_a_ref() {
    let r = Some("app/a/x86_64/stable");
    let bad = r#"{"Digest":"md5:1","MediaType":"m","OS":"linux","Architecture":"amd64","Labels":{"org.flatpak.ref":"app/a/x86_64/stable"}}"#;
    let good = entry("b", &[image("2", r, "amd64")]);
    let out = parse(&index_of(&[entry("a", &[bad.to_owned()]), good.clone()]))
        .filter("https://gw/", &all);
    assert_eq!(raw_results(body_str(&out)), [good.as_str()]);
}

// ---- whole-body errors ---------------------------------------------------------

#[test]
fn bodies_that_are_not_an_index_are_errors() {
    assert!(matches!(
        parse_err(br#"{"Registry":"x"}"#),
        IndexError::MissingResults
    ));
    assert!(matches!(
        parse_err(br#"{"Results":{}}"#),
        IndexError::ResultsNotArray
    ));
    assert!(matches!(
        parse_err(br#"{"Results":"x"}"#),
        IndexError::ResultsNotArray
    ));
    assert!(matches!(
        parse_err(br#"{"Results":[],"Results":[]}"#),
        IndexError::DuplicateResults
    ));
    assert!(matches!(parse_err(b"[]"), IndexError::NotAnObject));
    assert!(matches!(parse_err(b"  42"), IndexError::NotAnObject));
    assert!(matches!(
        parse_err(b"<html>502</html>"),
        IndexError::Json { .. }
    ));
    assert!(matches!(parse_err(b""), IndexError::Json { .. }));
    assert!(matches!(
        parse_err(br#"{"Results":[]"#),
        IndexError::Json { .. }
    ));
    assert!(matches!(
        parse_err(br#"{"Results":[]} x"#),
        IndexError::Json { .. }
    ));
    assert!(matches!(
        parse_err(br#"{"Results":[]}{}"#),
        IndexError::Json { .. }
    ));
    assert!(matches!(
        parse_err(br#"{"Results":[1,]}"#),
        IndexError::Json { .. }
    ));
    assert!(matches!(
        parse_err(b"{\"Results\":[\"\xff\"]}"),
        IndexError::NotUtf8(_)
    ));
    // The message names the problem.
    assert_eq!(
        parse_err(br#"{"Registry":"x"}"#).to_string(),
        "index body has no `Results` member"
    );
}

#[test]
fn whitespace_around_the_document_is_accepted() {
    let index = parse(" \n{ \"Results\" : [ ] } \n");
    assert!(index.is_empty());
}

#[test]
fn deep_nesting_is_an_error_or_a_dropped_entry_never_a_panic() {
    const DEPTH: usize = 200_000;
    let open = "[".repeat(DEPTH);
    let close = "]".repeat(DEPTH);

    // Unclosed, at several places.
    assert!(UpstreamIndex::parse(Bytes::from(open.clone())).is_err());
    assert!(UpstreamIndex::parse(Bytes::from(format!(r#"{{"Results":{open}"#))).is_err());
    assert!(
        UpstreamIndex::parse(Bytes::from(format!(
            r#"{{"Results":[{{"Name":"a","Images":[{{"Labels":{{"x":{open}"#
        )))
        .is_err()
    );

    // Closed: the deep value is skipped without recursion, the entry dropped.
    let index = parse(&format!(r#"{{"Results":[{open}{close}]}}"#));
    assert_eq!((index.len(), index.names().count()), (1, 0));
    let deep_label = format!(
        r#"{{"Results":[{{"Name":"a","Images":[{{"Digest":"sha256:1","MediaType":"m","OS":"l","Architecture":"a","Labels":{{"x":{open}{close}}}}}]}}]}}"#
    );
    let out = parse(&deep_label).filter("https://gw/", &all);
    assert_eq!((out.kept, out.dropped), (0, 1));
    let deep_objects = format!(
        r#"{{"Other":{}1{},"Results":[]}}"#,
        r#"{"a":"#.repeat(DEPTH),
        "}".repeat(DEPTH)
    );
    assert!(parse(&deep_objects).is_empty());
}

#[test]
fn pretty_printed_upstream_is_sliced_exactly() {
    let v: Value = serde_json::from_str(PULP_SAMPLE).expect("sample");
    let pretty = serde_json::to_string_pretty(&v).expect("pretty");
    let index = parse(&pretty);
    let out = index.filter("https://gw/", &all);
    assert_eq!(raw_results(body_str(&out)), raw_results(&pretty));
    // And a rebuild copies keys and values with their own spacing.
    let body = "{\"Results\":[{ \"Name\" : \"r\" , \"Images\" : [ {\"x\":1} ] , \"Z\" : [ 1 ] }]}";
    let out = parse(body).filter("https://gw/", &all);
    assert_eq!((out.kept, out.dropped), (0, 1));
    let body = "{\"Results\":[{ \"Name\" : \"r\" , \"Images\" : null , \"Z\" : [ 1 ] }]}";
    let out = parse(body).filter("https://gw/", &all);
    assert_eq!(
        raw_results(body_str(&out)),
        ["{\"Name\":\"r\",\"Images\":[],\"Z\":[ 1 ]}"]
    );
}

// ---- etag and gzip -----------------------------------------------------------

#[test]
fn etag_depends_on_the_body_only() {
    let a1 = parse(PULP_SAMPLE).filter("https://gw/", &all);
    let a2 = parse(PULP_SAMPLE).filter("https://gw/", &all);
    let b = parse(PULP_SAMPLE).filter("https://gw/", &|n: &str| n == "org/flatpak/hello");
    let c = parse(PULP_SAMPLE).filter("https://other/", &all);
    assert_eq!(a1.etag, a2.etag);
    assert_ne!(a1.etag, b.etag);
    assert_ne!(a1.etag, c.etag);
    assert_eq!(a1.etag.len(), 34);
    assert!(a1.etag.starts_with('"') && a1.etag.ends_with('"'));
    assert!(a1.etag[1..33].bytes().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(a1.etag, etag(&a1.body));
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

#[test]
fn gzip_round_trips() {
    let body = synth::index(&Spec::new(50));
    let gz = gzip(&body);
    assert!(gz.len() < body.len() / 2);
    assert_eq!(gunzip(&gz), body);
    assert_eq!(gunzip(&gzip(b"")), b"");
}

#[test]
fn stored_gzip_fallback_round_trips() {
    for len in [0, 1, 0xffff, 0x10000, 200_000] {
        let body: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        assert_eq!(gunzip(&gzip_stored(&body)), body, "len {len}");
    }
}

// ---- synthetic indexes ---------------------------------------------------------

#[test]
fn synth_index_is_realistic() {
    let spec = Spec::new(40);
    let body = synth::index(&spec);
    let text = std::str::from_utf8(&body).expect("UTF-8");
    let index = parse(text);
    assert_eq!(index.len(), 40);
    assert_eq!(
        index.names().collect::<Vec<_>>(),
        (0..40).map(synth::repo_name).collect::<Vec<_>>()
    );
    assert_eq!(index.refs().count(), 40);
    for raw in raw_results(text) {
        assert!(
            (1_000..3_700).contains(&raw.len()),
            "entry of {} bytes",
            raw.len()
        );
    }
    // Every entry is well-formed and distinct, so it is served verbatim.
    let out = index.filter("http://pulp.example.com:24816", &all);
    assert_eq!(
        body_str(&out).replacen("24816/", "24816", 1).as_bytes(),
        &body[..]
    );
    let app = index.refs().nth(1).expect("an app").1;
    assert_eq!(
        app.runtime.as_deref(),
        Some("org.example.Platform0/x86_64/23.08")
    );
}

/// Independent model of the filter: what the client should see, by value.
fn model(upstream: &Value, visible: &dyn Fn(&str) -> bool) -> Vec<(String, Vec<Value>)> {
    fn is_str(v: &Value) -> bool {
        v.is_string()
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for e in upstream["Results"].as_array().expect("Results") {
        let Some(name) = e["Name"].as_str() else {
            continue;
        };
        if !visible(name) {
            continue;
        }
        let images = e["Images"].as_array().expect("Images");
        let kept: Vec<Value> = images
            .iter()
            .filter(|i| {
                let ok = i["Digest"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("sha256:"))
                    && is_str(&i["MediaType"])
                    && is_str(&i["OS"])
                    && is_str(&i["Architecture"]);
                ok && match i["Labels"]["org.flatpak.ref"].as_str() {
                    Some(r) => seen.insert((r.to_owned(), i["Architecture"].to_string())),
                    None => true,
                }
            })
            .cloned()
            .collect();
        if kept.is_empty() && !images.is_empty() {
            continue;
        }
        out.push((name.to_owned(), kept));
    }
    out
}

#[test]
fn property_random_visible_subsets() {
    let spec = Spec {
        repos: 48,
        images_per_repo: 3,
        dup_every: 5,
        malformed_every: 7,
        seed: 7,
    };
    let body = synth::index(&spec);
    let text = std::str::from_utf8(&body).expect("UTF-8");
    let upstream: Value = serde_json::from_str(text).expect("JSON");
    let up_entries: HashSet<&str> = raw_results(text).into_iter().collect();
    let up_images: HashSet<&str> = up_entries.iter().flat_map(|e| raw_images(e)).collect();
    let index = parse(text);
    let mut rng = Rng::new(99);
    let mut rebuilt = 0;

    for round in 0..150 {
        let percent = rng.below(101);
        let visible: HashSet<String> = (0..spec.repos)
            .filter(|_| rng.below(100) < percent)
            .map(synth::repo_name)
            .collect();
        let is_visible = |n: &str| visible.contains(n);
        let out = index.filter("https://gw/", &is_visible);
        let got: Value = serde_json::from_slice(&out.body).expect("output is JSON");
        let expected = model(&upstream, &is_visible);

        let got_entries: Vec<(String, Vec<Value>)> = got["Results"]
            .as_array()
            .expect("Results")
            .iter()
            .map(|e| {
                let name = e["Name"].as_str().expect("Name").to_owned();
                (name, e["Images"].as_array().expect("Images").clone())
            })
            .collect();
        assert_eq!(got_entries, expected, "round {round}");
        assert_eq!(out.kept, expected.len());
        assert_eq!(out.kept + out.dropped, spec.repos);

        for raw in raw_results(body_str(&out)) {
            if !up_entries.contains(raw) {
                rebuilt += 1;
                for img in raw_images(raw) {
                    assert!(up_images.contains(img), "round {round}: image not verbatim");
                }
            }
        }
    }
    // Both the verbatim and the rebuild paths were exercised.
    assert!(rebuilt > 0);
}

// ---- the scanner accepts exactly what serde_json accepts -------------------------

/// Whether our parse found the document to be JSON, compared with serde_json.
fn assert_agrees(doc: &str) {
    let serde_ok = serde_json::from_str::<serde::de::IgnoredAny>(doc).is_ok();
    let ours = UpstreamIndex::parse(Bytes::copy_from_slice(doc.as_bytes()));
    let ours_ok = !matches!(ours, Err(IndexError::Json { .. }));
    assert_eq!(ours_ok, serde_ok, "{doc:?}: {:?}", ours.err());
}

#[test]
fn json_grammar_agrees_with_serde_json() {
    let values = [
        "0",
        "-0",
        "1",
        "-1",
        "10",
        "01",
        "-01",
        "1.5",
        "1.",
        ".5",
        "-",
        "+1",
        "1e5",
        "1E+5",
        "1e-5",
        "1e",
        "1e+",
        "1.5e3",
        "0.0e0",
        "1.e3",
        "00",
        "-a",
        "1x",
        "123456789012345678901234567890",
        "1e999",
        "true",
        "false",
        "null",
        "tru",
        "nul",
        "nulll",
        "True",
        "NaN",
        "Infinity",
        r#""""#,
        r#""a""#,
        r#""a"#,
        r#""\n\t\r\b\f\/\\\"""#,
        r#""\x""#,
        r#""\u00e9""#,
        r#""\u00G0""#,
        r#""\u12""#,
        r#""\ud800""#,
        r#""\udc00\ud800""#,
        "\"tab\there\"",
        "\"nl\nhere\"",
        "\"del\u{7f}ok\"",
        "\"ü ✓ \u{2028}\"",
        "[]",
        "[ ]",
        "[1,]",
        "[,1]",
        "[1 2]",
        "[1,,2]",
        "{}",
        "{ }",
        r#"{"a":1}"#,
        r#"{"a" 1}"#,
        r#"{"a":}"#,
        r#"{"a":1,}"#,
        "{,}",
        "{1:2}",
        r#"{"a":1 "b":2}"#,
        r#"{"a":[1,{"b":[]}]}"#,
        r#"{"a":[1,{"b":[]]}"#,
        "[[[]]]",
        "[[[]]",
        "[]]",
        "\u{c}1",
        "1\u{c}",
        " \t\r\n1 \t\r\n",
        "",
        " ",
        "{",
        "}",
        "[",
        "]",
        r#"{"a":1}}"#,
        "'a'",
    ];
    for v in values {
        assert_agrees(v);
        assert_agrees(&format!(r#"{{"x":{v},"Results":[]}}"#));
        assert_agrees(&format!(r#"{{"Results":[{v}]}}"#));
        assert_agrees(&format!(r#"{{"Results":[{{"Name":{v},"Images":[]}}]}}"#));
        assert_agrees(&format!(
            r#"{{"Results":[{{"Name":"a","Images":[{v}],"Lists":{v}}}]}}"#
        ));
        assert_agrees(&format!(
            r#"{{"Results":[{{"Name":"a","Images":[{{"Digest":{v},"Tags":{v},"Labels":{{"k":{v},"org.flatpak.ref":{v}}},"Annotations":{v}}}]}}]}}"#
        ));
    }
}

#[test]
fn mutated_indexes_agree_with_serde_json() {
    let spec = Spec {
        repos: 3,
        images_per_repo: 2,
        dup_every: 2,
        malformed_every: 3,
        seed: 1,
    };
    let synthetic = String::from_utf8(synth::index(&spec)).expect("UTF-8");
    let lists = r#"{"Results":[{"Name":"l","Images":null,"Lists":[{"Digest":"sha256:1","MediaType":"m","Tags":["a"],"Images":[{"Digest":"sha256:2","MediaType":"m","OS":"linux","Architecture":"amd64","Labels":{"org.flatpak.ref":"x"}}]}]}]}"#;
    let alphabet = b"{}[]:,\"\\ \n0123456789-+.eEtrufalsn\x01u";
    let mut rng = Rng::new(3);
    for base in [PULP_SAMPLE, synthetic.as_str(), lists] {
        for _ in 0..1500 {
            let mut doc = base.as_bytes().to_vec();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(doc.len());
                match rng.below(3) {
                    0 => {
                        doc.remove(at);
                    }
                    1 => doc.insert(at, alphabet[rng.below(alphabet.len())]),
                    _ => doc[at] = alphabet[rng.below(alphabet.len())],
                }
            }
            if let Ok(doc) = std::str::from_utf8(&doc) {
                assert_agrees(doc);
            }
        }
    }
}

#[test]
fn index_and_output_can_be_shared_across_threads() {
    fn shared<T: Send + Sync + 'static>() {}
    shared::<UpstreamIndex>();
    shared::<Filtered>();
    shared::<IndexError>();
}

#[test]
fn huge_values_are_skipped() {
    let icon = "A".repeat(8 << 20);
    let number = "9".repeat(1 << 20);
    let body = format!(
        r#"{{"Big":{number},"Results":[{{"Name":"a","Images":[{{"Digest":"sha256:1","MediaType":"m","OS":"linux","Architecture":"amd64","Labels":{{"icon":"{icon}","org.flatpak.ref":"app/a/x86_64/stable"}}}}]}}]}}"#
    );
    let index = parse(&body);
    let out = index.filter("https://gw/", &all);
    assert_eq!(out.kept, 1);
    assert_eq!(raw_results(body_str(&out)), raw_results(&body));
}
