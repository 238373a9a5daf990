//! The proxy's query normalisation and read keys: normalising is idempotent, keeps
//! every decoded pair, and the key of a query equals the key of its normal form.
#![no_main]

use frontdesk::proxy::{ReadKey, normalize_query};
use libfuzzer_sys::fuzz_target;

fn pairs(q: &str) -> Vec<(String, String)> {
    let mut p: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    p.sort();
    p
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let text: &str = &text;
    let (path, query) = text.split_once('?').unwrap_or(("users", text));
    let once = normalize_query(query);
    assert_eq!(normalize_query(&once), once);
    assert_eq!(pairs(&once), pairs(query));
    let path = format!("/v1/{path}");
    assert_eq!(
        ReadKey::new("sk_test_1", None, &path, query),
        ReadKey::new("sk_test_1", None, &path, &once)
    );
});
