//! Task-definition parsing: any bytes, as a RegisterTaskDefinition body,
//! either parse or are refused with a field error; nothing panics.

#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff::model::taskdef::TaskDefinition;

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Err(e) = TaskDefinition::parse(&doc) {
        // Every refusal names what is wrong.
        assert!(!e.to_string().is_empty());
    }
});
