use super::*;

const AKID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

fn secret_of(id: &str) -> Option<&'static str> {
    (id == AKID).then_some(SECRET)
}

#[test]
fn the_signing_key_is_the_one_in_aws_documentation() {
    let k = signing_key(SECRET, "20120215", "us-east-1", "iam");
    assert_eq!(
        hex(&k),
        "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
    );
}

#[test]
fn aws_test_suite_get_vanilla_verifies() {
    // aws-sig-v4-test-suite/get-vanilla.
    let headers = [
        ("Host", "example.amazonaws.com"),
        ("X-Amz-Date", "20150830T123600Z"),
        (
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
    ];
    let req = Request {
        method: "GET",
        path: "/",
        query: "",
        headers: &headers,
        body: b"",
    };
    let now = parse_amz_date("20150830T123600Z").unwrap();
    let c = verify(&req, secret_of, now, "service").unwrap();
    assert_eq!(c.region, "us-east-1");
    // And sign() makes the same signature.
    let (_, authz) = sign(
        &Request {
            headers: &headers[..1],
            ..req
        },
        AKID,
        SECRET,
        "us-east-1",
        "service",
        now,
    );
    assert!(
        authz.ends_with("5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
        "{authz}"
    );
}

fn signed(body: &[u8], now: i64) -> Vec<(String, String)> {
    let base = [
        ("host", "127.0.0.1:8800"),
        ("content-type", "application/x-amz-json-1.1"),
        (
            "x-amz-target",
            "AmazonEC2ContainerServiceV20141113.ListClusters",
        ),
    ];
    let req = Request {
        method: "POST",
        path: "/",
        query: "",
        headers: &base,
        body,
    };
    let (date, authz) = sign(&req, AKID, SECRET, "eu-west-1", "ecs", now);
    let mut h: Vec<(String, String)> = base
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    h.push(("X-Amz-Date".into(), date));
    h.push(("Authorization".into(), authz));
    h
}

fn check(headers: &[(String, String)], body: &[u8], now: i64) -> Result<Credential, AuthError> {
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    verify(
        &Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &h,
            body,
        },
        secret_of,
        now,
        "ecs",
    )
}

#[test]
fn what_is_wrong_is_named_in_aws_words() {
    let now = 1_790_000_000;
    let body = br#"{"maxResults": 5}"#;
    let h = signed(body, now);
    assert_eq!(check(&h, body, now).unwrap().region, "eu-west-1");

    // A changed body.
    let e = check(&h, br#"{"maxResults": 6}"#, now).unwrap_err();
    assert_eq!(e.name(), "InvalidSignatureException");
    assert!(e.message().contains("does not match"), "{}", e.message());

    // Too old or too new.
    let e = check(&h, body, now + MAX_SKEW_SECS + 1).unwrap_err();
    assert!(
        e.message().starts_with("Signature expired"),
        "{}",
        e.message()
    );
    let e = check(&h, body, now - MAX_SKEW_SECS - 1).unwrap_err();
    assert!(e.message().starts_with("Signature not yet current"));
    assert!(check(&h, body, now + MAX_SKEW_SECS).is_ok());

    // A wrong secret.
    let mut wrong = h.clone();
    let req_h: Vec<(&str, &str)> = h[..3]
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let (_, authz) = sign(
        &Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &req_h,
            body,
        },
        AKID,
        "not-the-secret",
        "eu-west-1",
        "ecs",
        now,
    );
    wrong[4].1 = authz;
    assert_eq!(
        check(&wrong, body, now).unwrap_err().name(),
        "InvalidSignatureException"
    );

    // An unknown key.
    let mut unknown = h.clone();
    unknown[4].1 = unknown[4].1.replace(AKID, "AKIDNOTKNOWN");
    assert_eq!(
        check(&unknown, body, now).unwrap_err(),
        AuthError::UnknownKey
    );

    // No signature at all; a mangled one.
    assert_eq!(check(&h[..4], body, now).unwrap_err(), AuthError::Missing);
    let mut mangled = h.clone();
    mangled[4].1 = "AWS4-HMAC-SHA256 Credential=x".into();
    assert_eq!(
        check(&mangled, body, now).unwrap_err().name(),
        "IncompleteSignatureException"
    );

    // A header that was signed, changed.
    let mut changed = h.clone();
    changed[2].1 = "AmazonEC2ContainerServiceV20141113.DeleteCluster".into();
    assert_eq!(
        check(&changed, body, now).unwrap_err().name(),
        "InvalidSignatureException"
    );

    // Signed for another service.
    let e = verify(
        &Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &h
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect::<Vec<_>>(),
            body,
        },
        secret_of,
        now,
        "logs",
    )
    .unwrap_err();
    assert!(e.message().contains("'logs'"), "{}", e.message());
}

#[test]
fn dates_round_trip() {
    for s in [
        "19700101T000000Z",
        "20150830T123600Z",
        "20261126T235959Z",
        "20240229T120000Z",
    ] {
        assert_eq!(format_amz_date(parse_amz_date(s).unwrap()), s);
    }
    assert_eq!(parse_amz_date("20150830T123600Z"), Some(1_440_938_160));
    for bad in [
        "",
        "2015-08-30T12:36:00Z",
        "20151330T123600Z",
        "2015083OT123600Z",
    ] {
        assert_eq!(parse_amz_date(bad), None, "{bad}");
    }
}

#[test]
fn paths_and_queries_are_canonical() {
    assert_eq!(canonical_path("/"), "/");
    assert_eq!(canonical_path("/a/./b/../c//d"), "/a/c/d");
    assert_eq!(canonical_path("/logs/a%20b"), "/logs/a%2520b");
    assert_eq!(canonical_query("b=2&a=z&a=y"), "a=y&a=z&b=2");
    assert_eq!(canonical_query("x=a%20b&y"), "x=a%20b&y=");
}
