//! `keep_decoded` on every value form: sync and async, `Result`, `cache_none = false`,
//! a background refresh, and a method.
use cache_memoize::cache_memoize;

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Report {
    body: String,
}

#[cache_memoize(keep_decoded)]
fn report(id: u32) -> Report {
    Report { body: id.to_string() }
}

#[cache_memoize(keep_decoded, lock)]
async fn report_async(id: u32) -> Report {
    Report { body: id.to_string() }
}

#[cache_memoize(keep_decoded)]
fn fallible(id: u32) -> Result<Report, String> {
    Ok(Report { body: id.to_string() })
}

#[cache_memoize(keep_decoded, cache_none = false)]
fn optional(id: u32) -> Option<Report> {
    Some(Report { body: id.to_string() })
}

#[cache_memoize(keep_decoded, stale = "1h")]
fn detached(id: u32) -> Report {
    Report { body: id.to_string() }
}

#[cache_memoize(keep_decoded, stale = "1h", cache_none = false)]
async fn detached_optional_async(id: u32) -> Option<Report> {
    Some(Report { body: id.to_string() })
}

struct Shop;

impl Shop {
    #[cache_memoize(keep_decoded, skip(self))]
    fn report(&self, id: u32) -> Report {
        Report { body: id.to_string() }
    }
}

fn main() {
    let _ = (report(1), fallible(1), optional(1), detached(1), Shop.report(1));
    let _ = (report_async(1), detached_optional_async(1));
}
