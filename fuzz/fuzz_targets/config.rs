//! Configuration loading (`Config::from_toml_str`): any text must give a Config or a list of
//! problems, never a panic, and the problems must print.
#![no_main]

use dcr_proxy::config::Config;
use dcr_proxy_fuzz::{config_dir, env};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = Config::from_toml_str(src, "fuzz.toml", config_dir(), &env()) {
        let _ = e.to_string();
    }
});
