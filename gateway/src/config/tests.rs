use super::*;

#[test]
fn unknown_key_is_named() {
    let err = parse("[server]\nlisten = []\nbogus = 1\n").unwrap_err();
    assert_eq!(err.0[0].key, "server.bogus", "{err}");
}
