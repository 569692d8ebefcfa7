use super::*;

fn parse(json: &str) -> Result<BindingSpec, SpecError> {
    BindingSpec::parse("hello", json.as_bytes())
}

fn rejection(json: &str) -> String {
    parse(json).expect_err("should be rejected").to_string()
}

const MINIMAL: &str =
    r#"{"runtime":"python3","handler":"app.handler","code":{"dir":"/srv/hello"}}"#;

#[test]
fn defaults_fill_in() {
    let spec = parse(MINIMAL).unwrap();
    assert_eq!(spec.runtime, Runtime::Python3);
    assert_eq!(spec.handler.as_deref(), Some("app.handler"));
    assert_eq!(
        spec.code,
        CodeSource::Dir {
            dir: "/srv/hello".into()
        }
    );
    assert!(spec.subjects.is_empty());
    assert!(spec.env.is_empty());
    assert_eq!(spec.timeout_ms, 3000);
    assert_eq!(spec.memory_mb, 128);
    assert_eq!(spec.pool, DEFAULT_POOL);
    assert_eq!((spec.pool.queue, spec.pool.idle_ms), (64, 60_000));
    assert_eq!(spec.network, Network::Full);
    assert_eq!(spec.ephemeral_storage_mb, 512);
}

#[test]
fn network_and_ephemeral_storage_are_checked_and_round_trip() {
    let spec = parse(
        r#"{"runtime":"python3","handler":"a.b","code":{"dir":"/srv"},
            "network":"nats","ephemeral_storage_mb":1024}"#,
    )
    .unwrap();
    assert_eq!(
        (spec.network, spec.ephemeral_storage_mb),
        (Network::Nats, 1024)
    );
    assert_eq!(BindingSpec::parse("hello", &spec.to_json()).unwrap(), spec);
    let bad = |field: &str| {
        parse(&format!(
            r#"{{"runtime":"python3","handler":"a.b","code":{{"dir":"/srv"}},{field}}}"#
        ))
        .unwrap_err()
        .to_string()
    };
    assert_eq!(
        bad(r#""network":"host""#),
        r#"network: expected "full", "nats" or "none", got "host""#
    );
    assert_eq!(
        bad(r#""ephemeral_storage_mb":100"#),
        "ephemeral_storage_mb: expected an integer of megabytes from 512 to 10240, got 100"
    );
}

#[test]
fn full_spec_round_trips_through_to_json() {
    let spec = parse(
        r#"{"runtime":"nodejs","handler":"index.handler","code":{"package":"hello"},
            "subjects":["myfunction.lambda","orders.*"],"env":{"GREETING":"hi"},
            "timeout_ms":500,"memory_mb":256,
            "pool":{"min":0,"max":2,"queue":5,"idle_ms":250,"max_invocations":9}}"#,
    )
    .unwrap();
    let again = BindingSpec::parse("hello", &spec.to_json()).unwrap();
    assert_eq!(spec, again);
    assert_eq!(
        again.pool,
        PoolSpec {
            min: 0,
            max: 2,
            queue: 5,
            idle_ms: 250,
            max_invocations: 9
        }
    );
    assert_eq!(again.subjects, vec!["myfunction.lambda", "orders.*"]);
}

#[test]
fn messages_name_the_field_and_the_expectation() {
    assert_eq!(
        rejection(
            r#"{"runtime":"python3","handler":"app.handler","code":{"dir":"/x"},"timeout_ms":"soon"}"#
        ),
        r#"timeout_ms: expected an integer of milliseconds, got "soon""#
    );
    assert_eq!(
        rejection(r#"{"runtime":"python3","handler":"app.handler","code":{"dir":"/x"},"colour":"red"}"#),
        "colour: unknown field; expected one of runtime, handler, code, subjects, env, timeout_ms, memory_mb, pool, async, layers, placement, nats, url, network, ephemeral_storage_mb, reserved_concurrency"
    );
    assert_eq!(
        rejection(r#"{"runtime":"ruby","handler":"app.handler","code":{"dir":"/x"}}"#),
        r#"runtime: expected one of "python3", "nodejs", "java", "provided", got "ruby""#
    );
    assert!(
        rejection(r#"{"runtime":"python3","code":{"dir":"/x"}}"#).starts_with("handler: required")
    );
    assert!(
        rejection(r#"{"runtime":"python3","handler":"app","code":{"dir":"/x"}}"#)
            .starts_with("handler: expected")
    );
    assert!(
        rejection(r#"{"runtime":"python3","handler":"a.b","code":{"dir":"rel/x"}}"#)
            .starts_with("code.dir: expected an absolute path")
    );
    assert!(rejection(
        r#"{"runtime":"python3","handler":"a.b","code":{"dir":"/x","package":"p"}}"#
    )
    .starts_with("code: give either"));
    assert!(rejection(
        r#"{"runtime":"python3","handler":"a.b","code":{"dir":"/x"},"pool":{"min":3,"max":2}}"#
    )
    .starts_with("pool: min (3)"));
    assert_eq!(
        rejection(
            r#"{"runtime":"python3","handler":"a.b","code":{"dir":"/x"},"pool":{"idle_ms":"1m"}}"#
        ),
        r#"pool.idle_ms: expected an integer of milliseconds, got "1m""#
    );
    assert!(rejection(
        r#"{"runtime":"python3","handler":"a.b","code":{"dir":"/x"},"pool":{"size":2}}"#
    )
    .starts_with("pool.size: unknown field; expected one of min, max, queue"));
    assert!(rejection(
        r#"{"runtime":"python3","handler":"a.b","code":{"dir":"/x"},"timeout_ms":0}"#
    )
    .contains("from 1 to 900000, got 0"));
    assert!(rejection(
        r#"{"runtime":"python3","handler":"a.b","code":{"dir":"/x"},"timeout_ms":1.5}"#
    )
    .contains("got 1.5"));
    assert!(rejection(
        r#"{"runtime":"python3","handler":"a.b","code":{"dir":"/x"},"env":{"A":1}}"#
    )
    .starts_with("env.A: expected a string, got 1"));
    assert!(rejection(r#"{"runtime":"python3","handler":"a.b","code":{"dir":"/x"},"env":{"AWS_LAMBDA_FUNCTION_NAME":"x"}}"#).contains("reserved"));
    assert!(rejection(
        r#"{"runtime":"python3","handler":"a.b","code":{"dir":"/x"},"env":{"1A":"x"}}"#
    )
    .starts_with("env.1A:"));
    assert!(rejection("not json").starts_with("the binding is not valid JSON"));
    assert!(rejection("[1]").contains("must be a JSON object, got an array"));
}

#[test]
fn subjects_are_checked() {
    let with = |s: &str| {
        parse(&format!(
            r#"{{"runtime":"python3","handler":"a.b","code":{{"dir":"/x"}},"subjects":[{s}]}}"#
        ))
    };
    assert!(with(r#""orders.>""#).is_ok());
    assert!(with(r#""a.*.c""#).is_ok());
    for bad in [
        r#""""#,
        r#""a..b""#,
        r#""a b""#,
        r#""a.>.b""#,
        r#""a.b*""#,
        r#"">""#,
        r#""*.x""#,
        r#""natsfn.logs.x""#,
        r#""$JS.API.x""#,
        r#""_INBOX.x""#,
        "1",
    ] {
        let err = with(bad).expect_err(bad);
        assert_eq!(err.field, "subjects[0]", "{bad}: {err}");
    }
    assert_eq!(with(r#""a","a""#).unwrap().subjects, vec!["a"]);
}

#[test]
fn bad_names_are_rejected() {
    let err = BindingSpec::parse("a.b", MINIMAL.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("function name \"a.b\""), "{err}");
}

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[test]
fn packages_and_layers() {
    let spec = parse(&format!(
        r#"{{"runtime":"python3","handler":"a.b","code":{{"package":"hello","digest":"{DIGEST}"}},
            "layers":[{{"package":"deps"}},{{"package":"tools","digest":"{DIGEST}"}}]}}"#
    ))
    .unwrap();
    assert_eq!(
        spec.code,
        CodeSource::Package(PackageRef {
            package: "hello".into(),
            digest: Some(DIGEST.into())
        })
    );
    assert_eq!(spec.layers.len(), 2);
    assert_eq!(spec.layers[0].digest, None);
    assert_eq!(BindingSpec::parse("hello", &spec.to_json()).unwrap(), spec);
    let json: Value = serde_json::from_slice(&spec.to_json()).unwrap();
    assert_eq!(
        json["code"],
        serde_json::json!({"package": "hello", "digest": DIGEST})
    );
    assert_eq!(json["layers"][0], serde_json::json!({"package": "deps"}));
    let dir: Value = serde_json::from_slice(&parse(MINIMAL).unwrap().to_json()).unwrap();
    assert_eq!(dir["code"], serde_json::json!({"dir": "/srv/hello"}));
    assert!(dir.get("layers").is_none());
}

#[test]
fn bad_packages_and_layers_are_named() {
    let with = |code: &str, layers: &str| {
        rejection(&format!(
            r#"{{"runtime":"python3","handler":"a.b","code":{code},"layers":{layers}}}"#
        ))
    };
    assert!(with(r#"{"package":"p","digest":"sha256:abc"}"#, "[]")
        .starts_with("code.digest: expected \"sha256:\" and 64"));
    assert!(with(r#"{"package":"p","digest":"md5:x"}"#, "[]").starts_with("code.digest:"));
    assert!(with(r#"{"package":"a/b"}"#, "[]").starts_with("code.package: expected"));
    assert!(with(r#"{"digest":"sha256:abc"}"#, "[]").starts_with("code: expected"));
    assert!(
        with(&format!(r#"{{"dir":"/x","digest":"{DIGEST}"}}"#), "[]")
            .starts_with("code.digest: a digest pins a package")
    );
    assert!(with(r#"{"package":"p","tag":"v1"}"#, "[]").starts_with("code.tag: unknown field"));
    let six = (0..6)
        .map(|i| format!(r#"{{"package":"l{i}"}}"#))
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(
        with(r#"{"package":"p"}"#, &format!("[{six}]")),
        "layers: at most 5 layers, got 6"
    );
    assert!(
        with(r#"{"package":"p"}"#, r#"[{"package":"a"},{"package":"a"}]"#)
            .starts_with("layers[1].package: \"a\" is already a layer")
    );
    assert!(with(r#"{"package":"p"}"#, r#"["a"]"#).starts_with("layers[0]: expected"));
    assert!(with(r#"{"package":"p"}"#, r#"[{"digest":"x"}]"#)
        .starts_with("layers[0].package: required"));
    assert!(with(
        r#"{"package":"p"}"#,
        r#"[{"package":"a","digest":"sha256:"}]"#
    )
    .starts_with("layers[0].digest: expected"));
    assert!(with(r#"{"package":"p"}"#, r#"{"package":"a"}"#).starts_with("layers: expected"));
}

#[test]
fn provided_needs_no_handler() {
    let spec = parse(r#"{"runtime":"provided","code":{"dir":"/x"}}"#).unwrap();
    assert_eq!(spec.handler, None);
}

#[test]
fn a_provided_handler_is_any_string_lambda_would_take() {
    let with = |h: &str| {
        parse(&format!(
            r#"{{"runtime":"provided","handler":{},"code":{{"dir":"/x"}}}}"#,
            Value::String(h.to_owned())
        ))
    };
    let long = "h".repeat(128);
    for good in [
        "bootstrap",
        "function.handler",
        "my-handler/v2:main",
        "ü",
        long.as_str(),
    ] {
        let spec = with(good).expect(good);
        assert_eq!(spec.handler.as_deref(), Some(good));
    }
    let too_long = "h".repeat(129);
    for bad in ["", "a b", "tab\there", "nul\u{0}", too_long.as_str()] {
        let err = with(bad).expect_err(bad);
        assert_eq!(err.field, "handler", "{bad:?}: {err}");
        assert!(err.message.contains("_HANDLER"), "{bad:?}: {err}");
    }
    // The other runtimes keep their forms.
    let python = rejection(r#"{"runtime":"python3","handler":"bootstrap","code":{"dir":"/x"}}"#);
    assert!(python.contains("\"file.function\""), "{python}");
    let java = rejection(r#"{"runtime":"java","handler":"bootstrap::","code":{"dir":"/x"}}"#);
    assert!(java.contains("\"package.Class::method\""), "{java}");
}

#[test]
fn placement_labels_all_must_match() {
    let spec = parse(
        r#"{"runtime":"provided","code":{"dir":"/x"},"placement":{"labels":{"region":"eu","gpu":"false"}}}"#,
    )
    .unwrap();
    let placement = spec.placement.expect("placement");
    let node = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert!(placement.admits(&node(&[("region", "eu"), ("gpu", "false"), ("x", "y")])));
    assert!(!placement.admits(&node(&[("region", "eu")])));
    assert!(!placement.admits(&node(&[("region", "us"), ("gpu", "false")])));
    let none = parse(r#"{"runtime":"provided","code":{"dir":"/x"}}"#).unwrap();
    assert_eq!(none.placement, None);
}

#[test]
fn placement_errors_name_the_field() {
    let err = |json: &str| parse(json).unwrap_err().to_string();
    assert_eq!(
        err(r#"{"runtime":"provided","code":{"dir":"/x"},"placement":{"labels":{"region":1}}}"#),
        "placement.labels.region: expected a string, got 1"
    );
    assert_eq!(
        err(r#"{"runtime":"provided","code":{"dir":"/x"},"placement":{"region":"eu"}}"#),
        "placement.region: unknown field; expected labels"
    );
    assert!(
        err(r#"{"runtime":"provided","code":{"dir":"/x"},"placement":"eu"}"#)
            .starts_with("placement: expected an object")
    );
    assert!(err(
        r#"{"runtime":"provided","code":{"dir":"/x"},"placement":{"labels":{"a b":"c"}}}"#
    )
    .starts_with("placement.labels.a b: expected a label name"));
}

#[test]
fn java_handlers_are_a_class_or_a_class_and_method() {
    let with = |h: &str| {
        parse(&format!(
            r#"{{"runtime":"java","handler":"{h}","code":{{"dir":"/x"}}}}"#
        ))
    };
    for good in [
        "example.Hello",
        "Hello",
        "a.b.C$Inner::handle",
        "ex.Hello::handleRequest",
    ] {
        let spec = with(good).expect(good);
        assert_eq!(spec.runtime, Runtime::Java);
        assert_eq!(spec.handler.as_deref(), Some(good));
    }
    for bad in [
        "",
        "example.",
        ".Hello",
        "example.Hello::",
        "example.Hello:handle",
        "a b.C",
        "1a.B",
        "a.B::c::d",
    ] {
        let err = with(bad).expect_err(bad);
        assert_eq!(err.field, "handler", "{bad}: {err}");
        assert!(
            err.message.contains("\"package.Class::method\""),
            "{bad}: {err}"
        );
    }
    let err = parse(r#"{"runtime":"java","code":{"dir":"/x"}}"#).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("handler: required for runtime java"),
        "{err}"
    );
}

#[test]
fn url_auth_and_cors_round_trip() {
    let spec = parse(
        r#"{"runtime":"provided","code":{"dir":"/x"},"url":{"auth":"AWS_IAM","invoke_mode":"BUFFERED",
            "cors":{"allow_origins":["https://example.com","*"],"allow_methods":["GET","POST"],
                    "allow_headers":["content-type"],"expose_headers":["x-custom"],"max_age":600,
                    "allow_credentials":true}}}"#,
    )
    .unwrap();
    let url = spec.url.clone().expect("url");
    assert_eq!(url.auth, UrlAuth::AwsIam);
    let cors = url.cors.expect("cors");
    assert_eq!(cors.allow_origins, ["https://example.com", "*"]);
    assert_eq!(cors.allow_methods, ["GET", "POST"]);
    assert_eq!((cors.max_age, cors.allow_credentials), (600, true));
    assert_eq!(BindingSpec::parse("hello", &spec.to_json()).unwrap(), spec);
    // Defaults: no auth; CORS allows every method and nothing else.
    let spec = parse(r#"{"runtime":"provided","code":{"dir":"/x"},"url":{"cors":{}}}"#).unwrap();
    let url = spec.url.expect("url");
    assert_eq!(url.auth, UrlAuth::None);
    let cors = url.cors.expect("cors");
    assert_eq!(cors.allow_methods, ["*"]);
    assert!(cors.allow_origins.is_empty() && cors.allow_headers.is_empty());
    assert_eq!((cors.max_age, cors.allow_credentials), (0, false));
}

#[test]
fn url_errors_name_the_field() {
    let err = |url: &str| {
        parse(&format!(
            r#"{{"runtime":"provided","code":{{"dir":"/x"}},"url":{url}}}"#
        ))
        .unwrap_err()
        .to_string()
    };
    assert_eq!(
        err(r#"{"auth":"IAM"}"#),
        r#"url.auth: expected "NONE" or "AWS_IAM", got "IAM""#
    );
    assert!(err(r#"{"invoke_mode":"RESPONSE_STREAM"}"#)
        .starts_with("url.invoke_mode: RESPONSE_STREAM is not supported yet"));
    assert_eq!(
        err(r#"{"authorization":"NONE"}"#),
        "url.authorization: unknown field; expected one of auth, invoke_mode, cors"
    );
    assert!(err(r#"{"cors":{"allow_origins":["example.com"]}}"#)
        .starts_with("url.cors.allow_origins[0]: expected an origin"));
    assert!(err(r#"{"cors":{"allow_methods":["OPTIONS"]}}"#)
        .starts_with("url.cors.allow_methods[0]: expected one of GET"));
    assert!(err(r#"{"cors":{"allow_headers":["a b"]}}"#)
        .starts_with("url.cors.allow_headers[0]: expected a header name"));
    assert_eq!(
        err(r#"{"cors":{"max_age":86401}}"#),
        "url.cors.max_age: expected an integer of seconds from 0 to 86400, got 86401"
    );
    assert_eq!(
        err(r#"{"cors":{"allow_credentials":"yes"}}"#),
        r#"url.cors.allow_credentials: expected true or false, got "yes""#
    );
    assert_eq!(
        err(r#"{"cors":{"expose_headers":"x"}}"#),
        r#"url.cors.expose_headers: expected an array of strings, got "x""#
    );
    assert!(err(r#""AWS_IAM""#).starts_with("url: expected an object"));
}
