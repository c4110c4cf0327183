//! Every bad task definition in tests/task_definitions/invalid/ must be
//! refused with exactly the error beside it (NAME.err); every one in
//! valid/ must be accepted.

use std::path::PathBuf;

use skiff::model::taskdef::TaskDefinition;

fn files(dir: &str, ext: &str) -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/task_definitions")
        .join(dir);
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    out.sort();
    out
}

#[test]
fn invalid_definitions_get_their_exact_error() {
    let cases = files("invalid", "json");
    assert!(cases.len() >= 20, "only {} cases", cases.len());
    let mut wrong = Vec::new();
    for json in cases {
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let want = std::fs::read_to_string(json.with_extension("err")).unwrap();
        match TaskDefinition::parse(&doc) {
            Ok(_) => wrong.push(format!("{}: accepted", json.display())),
            Err(e) if e.to_string() != want.trim_end() => wrong.push(format!(
                "{}:\n  want {}\n  got  {e}",
                json.display(),
                want.trim_end()
            )),
            Err(_) => {}
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

#[test]
fn valid_definitions_are_accepted() {
    for json in files("valid", "json") {
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        if let Err(e) = TaskDefinition::parse(&doc) {
            panic!("{}: {e}", json.display());
        }
    }
}
