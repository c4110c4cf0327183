//! Account settings: PutAccountSetting, PutAccountSettingDefault,
//! DeleteAccountSetting and ListAccountSettings (what Terraform's
//! `aws_ecs_account_setting_default` and `aws ecs put-account-setting`
//! call). Stored at `settings/PRINCIPAL/NAME`; the account's defaults are
//! its root's (`arn:aws:iam::ACCOUNT:root`). A principal's effective
//! setting is its own, else the account default, else ECS's.
//!
//! What they change in skiff: `containerInsights` is the setting a new
//! cluster gets when CreateCluster does not say. The others are kept and
//! shown, as the AWS features they switch (trunking, FIPS, GuardDuty,
//! task retirement) have no counterpart here; the long ARN formats are
//! always enabled, and refusing to disable them is what ECS does too.

use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::{decode, page, Api};
use crate::model::arn::Scope;
use crate::store::Write;

/// A setting: its name, ECS's default and the values it takes.
struct Setting {
    name: &'static str,
    default: &'static str,
    values: &'static [&'static str],
}

/// ECS's account settings, in name order.
const SETTINGS: &[Setting] = &[
    Setting {
        name: "awsvpcTrunking",
        default: "disabled",
        values: &["enabled", "disabled"],
    },
    Setting {
        name: "containerInsights",
        default: "disabled",
        values: &["enabled", "disabled", "enhanced"],
    },
    Setting {
        name: "containerInstanceLongArnFormat",
        default: "enabled",
        values: &["enabled"],
    },
    Setting {
        name: "defaultLogDriverMode",
        default: "non-blocking",
        values: &["blocking", "non-blocking"],
    },
    Setting {
        name: "dualStackIPv6",
        default: "disabled",
        values: &["enabled", "disabled"],
    },
    Setting {
        name: "fargateEventWindows",
        default: "disabled",
        values: &["enabled", "disabled"],
    },
    Setting {
        name: "fargateFIPSMode",
        default: "disabled",
        values: &["enabled", "disabled"],
    },
    Setting {
        name: "fargateTaskRetirementWaitPeriod",
        default: "7",
        values: &["0", "7", "14"],
    },
    Setting {
        name: "guardDutyActivate",
        default: "off",
        values: &["on", "off"],
    },
    Setting {
        name: "serviceLongArnFormat",
        default: "enabled",
        values: &["enabled"],
    },
    Setting {
        name: "tagResourceAuthorization",
        default: "on",
        values: &["on", "off"],
    },
    Setting {
        name: "taskLongArnFormat",
        default: "enabled",
        values: &["enabled"],
    },
];

use crate::model::settings::{key, SettingRecord};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SettingRequest {
    name: Option<String>,
    value: Option<String>,
    principal_arn: Option<String>,
    #[serde(default)]
    effective_settings: bool,
}

/// The setting `name` names, or an error listing the names.
fn setting(name: Option<&str>) -> ApiResult<&'static Setting> {
    let name = name.ok_or_else(|| ApiError::invalid("name is required"))?;
    SETTINGS.iter().find(|s| s.name == name).ok_or_else(|| {
        ApiError::invalid(format!(
            "name {name:?} is not an account setting; expected one of {}",
            SETTINGS
                .iter()
                .map(|s| s.name)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

/// The principal a call is about: `principalArn` (an IAM user, role or
/// root of this account) or the caller.
fn principal(scope: &Scope, given: Option<&str>) -> ApiResult<String> {
    let Some(arn) = given else {
        return Ok(scope.principal());
    };
    let prefix = format!("arn:aws:iam::{}:", scope.account);
    let ok = arn.strip_prefix(&prefix).is_some_and(|rest| {
        rest == "root"
            || ["user/", "role/"].iter().any(|k| {
                rest.strip_prefix(k).is_some_and(|n| {
                    !n.is_empty()
                        && n.len() <= 512
                        && n.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-/".contains(&b))
                })
            })
    });
    if ok {
        Ok(arn.to_string())
    } else {
        Err(ApiError::invalid(format!(
            "principalArn {arn:?} is not an IAM user, role or root of account {}: expected {prefix}user/NAME, {prefix}role/NAME or {prefix}root",
            scope.account
        )))
    }
}

/// The value stored for `principal`'s setting `name`, if any.
fn stored(api: &Api, principal: &str, name: &str) -> ApiResult<Option<String>> {
    Ok(api
        .store
        .get(&key(principal, name))?
        .and_then(|r| SettingRecord::decode(&r.value).ok())
        .map(|r| r.value))
}

fn view(name: &str, value: &str, principal: &str, kind: &str) -> Value {
    json!({"name": name, "value": value, "principalArn": principal, "type": kind})
}

/// The setting `name` in effect for `principal`: its own, the account
/// default, or ECS's; with the principal whose setting it is.
fn effective(api: &Api, scope: &Scope, principal: &str, s: &Setting) -> ApiResult<Value> {
    if let Some(v) = stored(api, principal, s.name)? {
        return Ok(view(s.name, &v, principal, "user"));
    }
    let root = scope.root();
    if let Some(v) = stored(api, &root, s.name)? {
        return Ok(view(s.name, &v, &root, "user"));
    }
    Ok(view(s.name, s.default, &root, "aws_managed"))
}

/// The value of account setting `name` in effect for the caller (the
/// `containerInsights` a new cluster gets), if one was set by anyone.
pub fn chosen(api: &Api, scope: &Scope, name: &str) -> ApiResult<Option<String>> {
    let Some(s) = SETTINGS.iter().find(|s| s.name == name) else {
        return Ok(None);
    };
    let v = effective(api, scope, &scope.principal(), s)?;
    Ok((v["type"] == "user").then(|| v["value"].as_str().unwrap_or_default().to_string()))
}

/// Stores `principal`'s setting from the request's name and value.
fn put_for(api: &Api, principal: &str, r: &SettingRequest) -> ApiResult {
    let s = setting(r.name.as_deref())?;
    let value = r
        .value
        .as_deref()
        .ok_or_else(|| ApiError::invalid("value is required"))?;
    if !s.values.contains(&value) {
        return Err(ApiError::invalid(if s.values == ["enabled"] {
            format!(
                "You can no longer disable {}: long ARN formats are always enabled",
                s.name
            )
        } else {
            format!(
                "value {value:?} is not valid for {}; expected one of {}",
                s.name,
                s.values.join(", ")
            )
        }));
    }
    api.store.commit(
        &[],
        &[Write::Put(
            key(principal, s.name),
            SettingRecord {
                value: value.to_string(),
            }
            .encode(),
        )],
    )?;
    Ok(json!({"setting": view(s.name, value, principal, "user")}))
}

/// PutAccountSetting: the setting of `principalArn`, or of the caller.
pub fn put(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let r: SettingRequest = decode(req)?;
    let principal = principal(scope, r.principal_arn.as_deref())?;
    put_for(api, &principal, &r)
}

/// PutAccountSettingDefault: the account's default, for every principal
/// that has not set its own.
pub fn put_default(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let r: SettingRequest = decode(req)?;
    if r.principal_arn.is_some() {
        return Err(ApiError::invalid(
            "principalArn is not a field of PutAccountSettingDefault (it sets the account's default); use PutAccountSetting for one principal",
        ));
    }
    put_for(api, &scope.root(), &r)
}

/// DeleteAccountSetting: removes a principal's own setting (the account
/// default or ECS's applies again).
pub fn delete(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let r: SettingRequest = decode(req)?;
    let s = setting(r.name.as_deref())?;
    let principal = principal(scope, r.principal_arn.as_deref())?;
    let Some(value) = stored(api, &principal, s.name)? else {
        return Err(ApiError::invalid(format!(
            "{principal} has no account setting {} of its own to delete",
            s.name
        )));
    };
    api.store
        .commit(&[], &[Write::Delete(key(&principal, s.name))])?;
    Ok(json!({"setting": view(s.name, &value, &principal, "user")}))
}

/// ListAccountSettings: the principal's own settings, or with
/// `effectiveSettings` the ones in effect for it (every setting, or the
/// named one); filtered by `value`, 10 a page unless `maxResults` says.
pub fn list(api: &Api, scope: &Scope, req: &Value) -> ApiResult {
    let r: SettingRequest = decode(req)?;
    let max = page::max_results(req, 10)?;
    let after = page::after(req)?;
    let principal = principal(scope, r.principal_arn.as_deref())?;
    let named = match r.name.as_deref() {
        Some(n) => vec![setting(Some(n))?],
        None => SETTINGS.iter().collect(),
    };
    let mut out = Vec::new();
    for s in named {
        let v = if r.effective_settings {
            effective(api, scope, &principal, s)?
        } else {
            match stored(api, &principal, s.name)? {
                Some(v) => view(s.name, &v, &principal, "user"),
                None => continue,
            }
        };
        if r.value.as_deref().is_none_or(|want| v["value"] == want) {
            out.push(v);
        }
    }
    let (settings, next) = page::page(
        out,
        |v| v["name"].as_str().unwrap_or_default().to_string(),
        after.as_deref(),
        max,
    );
    let mut res = json!({"settings": settings});
    if let Some(t) = next {
        res["nextToken"] = json!(t);
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_in_name_order() {
        // page() pages by name: the table must be sorted.
        assert!(SETTINGS.windows(2).all(|w| w[0].name < w[1].name));
        assert!(SETTINGS.iter().all(|s| s.values.contains(&s.default)));
    }

    #[test]
    fn principal_arns_are_checked() {
        let scope = Scope::new("us-east-1", "000000000000");
        assert_eq!(
            principal(&scope, None).unwrap(),
            "arn:aws:iam::000000000000:root"
        );
        for ok in [
            "arn:aws:iam::000000000000:root",
            "arn:aws:iam::000000000000:user/ci-bot",
            "arn:aws:iam::000000000000:role/path/deployer",
        ] {
            assert_eq!(principal(&scope, Some(ok)).unwrap(), ok);
        }
        for bad in [
            "arn:aws:iam::111111111111:root",
            "arn:aws:iam::000000000000:user/",
            "arn:aws:iam::000000000000:group/x",
            "ci-bot",
            "arn:aws:iam::000000000000:user/é",
        ] {
            let e = principal(&scope, Some(bad)).unwrap_err();
            assert!(e.message.contains("principalArn"), "{bad}: {e:?}");
        }
        let named = Scope {
            user: Some("alice".into()),
            ..scope
        };
        assert_eq!(named.principal(), "arn:aws:iam::000000000000:user/alice");
    }
}
