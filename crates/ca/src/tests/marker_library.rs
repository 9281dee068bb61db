// A shared library whose constructor leaves a marker file: the proof that a library was
// loaded. Included (`include!`) by the CA's unit tests and the integration tests, which
// cannot share a test module otherwise.

/// Builds `dir/marker.so`, whose constructor writes `dir/loaded` when the library is loaded.
/// Returns (library, marker).
fn marker_library(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let marker = dir.join("loaded");
    let src = dir.join("marker.c");
    let lib = dir.join("marker.so");
    let quoted = format!("{:?}", marker.display().to_string());
    std::fs::write(
        &src,
        format!(
            "#include <stdio.h>\n\
             __attribute__((constructor)) static void trellis_marker(void) {{\n\
             FILE *f = fopen({quoted}, \"w\");\n\
             if (f) {{ fputs(\"loaded\\n\", f); fclose(f); }}\n\
             }}\n"
        ),
    )
    .unwrap();
    let out = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .output()
        .expect("a C compiler (cc) is needed to build the test library");
    assert!(
        out.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (lib, marker)
}
