//! Relinks the registryd binary when its link order or its linker driver change: packaging/link-gcc
//! (the linker `.cargo/config.toml` names) reads them, and cargo cannot know that by itself.
fn main() {
    for f in [
        "packaging/link-gcc",
        "packaging/symbol-key.awk",
        "packaging/symbol-order.txt",
    ] {
        println!("cargo:rerun-if-changed={f}");
    }
}
