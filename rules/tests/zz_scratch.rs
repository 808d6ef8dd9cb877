#[test]
fn show() {
    let files: Vec<std::path::PathBuf> = std::env::var("FILES").unwrap().split(',').map(Into::into).collect();
    let mut out = Vec::new();
    let c = if std::env::var("CHECK").is_ok() { vigil_rules::check_files(&files, &mut out) } else { vigil_rules::test_files(&files, &mut out) };
    println!("{}\nexit {c}", String::from_utf8_lossy(&out));
}
