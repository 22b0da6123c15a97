use super::*;
use bytes::Bytes;

fn image(flatpak_ref: &str, metadata: &str) -> String {
    format!(
        r#"{{"Tags":["latest"],"Digest":"sha256:{d}","MediaType":"application/vnd.oci.image.manifest.v1+json","OS":"linux","Architecture":"amd64","Labels":{{"org.flatpak.ref":"{flatpak_ref}","org.flatpak.metadata":"{metadata}"}}}}"#,
        d = "ab".repeat(32)
    )
}

fn index() -> UpstreamIndex {
    let app = image(
        "app/org.test.App/x86_64/stable",
        r"[Application]\nname=org.test.App\nruntime=org.test.Platform/x86_64/1\nsdk=org.test.Sdk/x86_64/1\n",
    );
    let runtime = image(
        "runtime/org.test.Platform/x86_64/1",
        r"[Runtime]\nname=org.test.Platform\n",
    );
    let body = format!(
        r#"{{"Registry":"http://pulp/","Results":[{{"Name":"apps","Images":[{app}]}},{{"Name":"runtimes","Images":[{runtime}]}}]}}"#
    );
    UpstreamIndex::parse(Bytes::from(body)).unwrap()
}

#[test]
fn an_app_without_its_runtime_is_flagged_with_the_repository_that_holds_it() {
    let r = runtime_report(&index(), &|name| name == "apps");
    assert_eq!(r.refs.len(), 1);
    let runtime: Vec<_> = r.missing.iter().filter(|m| m.kind == "runtime").collect();
    assert_eq!(runtime.len(), 1);
    assert_eq!(runtime[0].needs, "runtime/org.test.Platform/x86_64/1");
    assert_eq!(runtime[0].held_by, vec!["runtimes".to_owned()]);
    assert_eq!(r.apps_missing_runtime(), 1);
    // the SDK is listed too, and held by nobody
    let sdk: Vec<_> = r.missing.iter().filter(|m| m.kind == "sdk").collect();
    assert_eq!(sdk.len(), 1);
    assert!(sdk[0].held_by.is_empty());
}

#[test]
fn an_app_with_its_runtime_is_not_flagged() {
    let r = runtime_report(&index(), &|_| true);
    assert_eq!(r.refs.len(), 2);
    assert_eq!(r.apps_missing_runtime(), 0);
    assert!(r.missing.iter().all(|m| m.kind == "sdk"));
}

#[test]
fn invisible_apps_are_not_examined() {
    let r = runtime_report(&index(), &|name| name == "runtimes");
    assert!(r.missing.is_empty());
}
