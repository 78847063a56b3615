#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatstream_fuzz::sse_render(data));
