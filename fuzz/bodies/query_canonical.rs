//! `http::query::{pairs, canonical}`: the query forwarded to Pulp's index and
//! used in the index cache key.
//!
//! Invariants: accepted queries respect the limits and hold no NUL; the
//! canonical form ignores order and repetition (the query is a multimap),
//! describes the same multimap, and is a fixed point.

use container_gateway::http::query::{
    MAX_PARAMS, MAX_QUERY_LEN, QueryError, canonical, first, pairs,
};

type Pairs = Vec<(String, String)>;

fn multimap(mut p: Pairs) -> Pairs {
    p.sort();
    p.dedup();
    p
}

pub fn run(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = pairs(raw);
    // The same parameters in the opposite order.
    let reversed = raw.split('&').rev().collect::<Vec<_>>().join("&");
    let other = pairs(&reversed);
    let p = match parsed {
        Ok(p) => p,
        Err(QueryError::TooLong) => {
            assert!(raw.len() > MAX_QUERY_LEN);
            assert_eq!(other, Err(QueryError::TooLong));
            return;
        }
        Err(e) => {
            assert!(raw.len() <= MAX_QUERY_LEN);
            assert!(other.is_err(), "{e:?} one way, {other:?} the other");
            if e == QueryError::Nul {
                assert!(raw.contains("%00") || raw.contains('\0'));
            }
            return;
        }
    };
    assert!(p.len() <= MAX_PARAMS);
    assert!(
        p.iter()
            .all(|(k, v)| !k.contains('\0') && !v.contains('\0'))
    );

    let c = canonical(p.clone());
    let Ok(other) = other else {
        panic!("{reversed:?} rejected: {other:?}")
    };
    assert_eq!(canonical(other), c, "order changed the canonical form");
    let mut rotated = p.clone();
    if !rotated.is_empty() {
        let by = data.len() % rotated.len();
        rotated.rotate_left(by);
    }
    assert_eq!(canonical(rotated), c, "rotation changed the canonical form");
    let mut doubled = p.clone();
    doubled.extend(p.iter().rev().cloned());
    assert_eq!(
        canonical(doubled),
        c,
        "repetition changed the canonical form"
    );

    match pairs(&c) {
        Ok(again) => {
            assert_eq!(multimap(again.clone()), multimap(p.clone()), "{c:?}");
            assert_eq!(canonical(again), c, "not a fixed point: {c:?}");
        }
        // Re-encoding may grow the text (`é` is `%C3%A9`) past the limit.
        Err(e) => assert!(
            e == QueryError::TooLong && c.len() > MAX_QUERY_LEN,
            "{c:?}: {e:?}"
        ),
    }

    for (k, _) in p.iter().take(8) {
        let expected = p.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(first(&p, k), expected);
    }
}
