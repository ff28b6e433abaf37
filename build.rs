//! The web client is embedded in the binary (include_dir!): rebuild when anything under
//! web-client/ changes, new files included.
fn main() {
    println!("cargo:rerun-if-changed=web-client");
    println!("cargo:rerun-if-changed=recordings-schema");
    println!("cargo:rerun-if-changed=src/store/migrations");
}
