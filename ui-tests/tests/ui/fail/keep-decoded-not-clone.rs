use cache_memoize::cache_memoize;

#[derive(serde::Serialize, serde::Deserialize)]
struct NotClone {
    body: String,
}

#[cache_memoize(keep_decoded)]
fn report(id: u32) -> NotClone {
    NotClone { body: id.to_string() }
}

fn main() {}
