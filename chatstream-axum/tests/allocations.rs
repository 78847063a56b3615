//! Heap allocations per relayed token (issue 16): the in-memory pipeline of
//! `benches/instructions.rs` (scripted backend → worker → in-memory broker → gateway →
//! seed 001 SSE body, one thread, coalescing off), counted by dhat's allocator (testing mode). The count
//! is a function of the program alone, so a change that adds an allocation to the
//! per-token path shows here as a number over the bound, and the bound should come down
//! as allocations are taken out.

#[path = "../benches/instructions.rs"]
#[allow(dead_code)]
mod harness;

/// dhat's allocator: counts every heap block (its testing mode, no file written).
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn blocks() -> u64 {
    dhat::HeapStats::get().total_blocks
}

/// Allocations per token of `streams` × `tokens`, each stream's set-up included.
fn per_token(streams: usize, tokens: usize) -> f64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime");
    let before = blocks();
    runtime.block_on(harness::run(streams, tokens, false));
    let after = blocks();
    (after - before) as f64 / (streams * tokens) as f64
}

#[test]
fn allocations_per_relayed_token_stay_under_the_bound() {
    let _profiler = dhat::Profiler::builder().testing().build();
    // Once first: lazily made statics (tracing's callsites, the runtime's) are not per token.
    per_token(10, 20);
    let many = per_token(200, 20);
    let single = per_token(1, 2_000);
    println!("allocations per token: 200 x 20 {many:.2}, 1 x 2,000 {single:.2}");
    assert!(
        many <= MANY_BOUND,
        "200 x 20: {many:.2} allocations per token"
    );
    assert!(
        single <= SINGLE_BOUND,
        "1 x 2,000: {single:.2} allocations per token"
    );
}

/// The bounds: the counts after issue 16's changes (6.45 and 8.09 heap blocks per token,
/// the same in every run: the token's text from the scripted backend, the envelope's `Arc`
/// in the broker's log, the rest per stream; 13.83 and 16.10 at `a7a3722`, 10.73 and 13.10
/// with only the SSE body's reused buffer) and less than one block per token of room, so
/// one more allocation per token fails the test. Lower them as allocations are taken out
/// of the path.
const MANY_BOUND: f64 = 7.0;
/// See [`MANY_BOUND`].
const SINGLE_BOUND: f64 = 8.6;
