//! Lexicon document validation, as the reference validates a fetched permission set
//! (ATPROTO-AUTH.md §9.2 step 3, "document validates"): a document that fails is rejected
//! whole, so none of its permissions is ever granted.
//!
//! The rules mirror `lexiconDocumentSchema` of `@atproto/lex-document` 0.1.12
//! (`dist/lexicon-document.js`), which `@atproto/lex-resolver` 0.3.0 (`dist/lex-resolver.js`,
//! `LexResolver.fetch`: `lexiconDocumentSchema.safeParse(record)`) applies for
//! `@atproto/oauth-provider` 0.22.9 (`dist/lexicon/lexicon-manager.js`) in `@atproto/pds`
//! 0.5.35, with the primitives of `@atproto/lex-schema` 0.2.7 (`dist/schema/*.js`) and the
//! formats of `@atproto/syntax` 0.7.7:
//!
//! - Objects keep unknown keys (no strictness), but every known key that is present must
//!   have its type; `null` is a value, so `"title": null` is invalid. Every shape has an
//!   optional `description` string.
//! - Document: `lexicon` the number 1, `id` an NSID, optional integer `revision`, `defs` an
//!   object. `defs.main` is optional and may be any type below; every other def (a
//!   non-empty name) may only be `boolean`, `integer`, `string`, `bytes`, `cid-link`,
//!   `blob`, `array`, `object` or `token`: a second `permission-set` (or `record`, `query`,
//!   `procedure`, `subscription`) anywhere but `main` is invalid, as is `unknown`, `ref`,
//!   `union` or `params` as a def.
//! - `permission-set`: `permissions` (required) an array of permissions; `title`,
//!   `detail` strings; `title:lang`, `detail:lang` objects whose keys are BCP 47 language
//!   tags (strict: `parseLanguageString`, lowercase 2-3 letter primary subtag, no repeated
//!   variant or extension singleton) and whose values are strings.
//! - Permission (`lexiconPermissionSchema`): an object with `type` exactly `permission`,
//!   a non-empty string `resource`, and every other key a boolean, a safe integer, a
//!   string, or an array all of booleans, all of safe integers or all of strings
//!   (`paramSchema` in `dist/schema/params.js`). An object, `null`, a float or a mixed
//!   array as any parameter value invalidates the document.
//! - The other types as `lexicon-document.js` writes them: integers are safe integers
//!   (`Number.isSafeInteger`), `record` needs `key` (`any`, `nsid`, `tid`,
//!   `literal:<record key>`) and `record` (an `object`), `object` and `params` need
//!   `properties` and every `required` name among them, payload `encoding` is one MIME
//!   type without `,`, `;` or space, error `name` is non-empty, subscription `message.schema`
//!   is a `union`, string `format` is one of the eleven formats.
//!
//! What is *not* checked here is checked per permission at expansion (§9.3,
//! `IncludeScope.buildPermissions` in `@atproto/oauth-scopes` 0.5.12
//! `dist/scopes/include-scope.js`): unknown parameter names, a resource other than `repo`
//! or `rpc`, NSIDs, actions, audiences and a scalar where a list is expected only drop
//! that one permission (`permission_set.rs`).
//!
//! Two deliberate differences, both stricter: the reference accepts a CID link where a
//! string is expected (`coerceToString`), and checks `required` names with `in`, so
//! `Object.prototype` names such as `toString` pass; atgate does neither.

use serde_json::{Map, Value};

/// Why a lexicon document is invalid: where, and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct LexiconError {
    /// A JSON path into the document (`defs.main.permissions[2].collection`).
    pub path: String,
    /// What is wrong at `path`.
    pub reason: LexiconReason,
}

/// What is wrong at one place of a lexicon document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LexiconReason {
    /// A required key is absent.
    #[error("required")]
    Missing,
    /// The value has the wrong JSON type.
    #[error("expected {0}")]
    Expected(&'static str),
    /// `lexicon` is not 1.
    #[error("only lexicon version 1 is known")]
    Version,
    /// `type` names no type allowed here.
    #[error("type not allowed here")]
    Type,
    /// A permission's `type` is not `permission`.
    #[error("not a permission")]
    NotPermission,
    /// A `required` name is not among `properties`.
    #[error("a required name is not a property")]
    RequiredNotDefined,
}

/// Validates a whole lexicon document (the record value or the bare lexicon JSON).
pub fn validate_document(doc: &Value) -> Result<(), LexiconError> {
    let obj = object(doc, "document")?;
    let lexicon = obj.get("lexicon").ok_or_else(|| fail("lexicon", LexiconReason::Missing))?;
    if lexicon.as_f64() != Some(1.0) {
        return Err(fail("lexicon", LexiconReason::Version));
    }
    check_fields(obj, DOCUMENT, "")?;
    let defs = object(obj.get("defs").ok_or_else(|| fail("defs", LexiconReason::Missing))?, "defs")?;
    for (name, def) in defs {
        let path = format!("defs.{name}");
        if name.is_empty() {
            return Err(fail(path, LexiconReason::Expected("a non-empty def name")));
        }
        check_typed(def, if name == "main" { Union::Main } else { Union::Named }, &path)?;
    }
    Ok(())
}

/// A known key: its name, whether it must be present, what its value must be.
type Field = (&'static str, bool, Kind);

/// What a value must be.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Str,
    NonEmptyStr,
    Int,
    Bool,
    Strs,
    Ints,
    Nsid,
    Format,
    RecordKey,
    Encoding,
    LangMap,
    /// An object whose `type` is one of a union's.
    Typed(Union),
    /// An object of any keys, each value one of a union's.
    Dict(Union),
    /// An untyped object of these fields.
    Shape(&'static [Field]),
    /// An array of such objects.
    Shapes(&'static [Field]),
    Permissions,
}

const REQ: bool = true;
const OPT: bool = false;

// === shapes (lexicon-document.js, in its order) ===

const DOCUMENT: &[Field] = &[("id", REQ, Kind::Nsid), ("revision", OPT, Kind::Int)];
const BOOLEAN: &[Field] = &[("default", OPT, Kind::Bool), ("const", OPT, Kind::Bool)];
const INTEGER: &[Field] = &[
    ("default", OPT, Kind::Int),
    ("minimum", OPT, Kind::Int),
    ("maximum", OPT, Kind::Int),
    ("enum", OPT, Kind::Ints),
    ("const", OPT, Kind::Int),
];
const STRING: &[Field] = &[
    ("format", OPT, Kind::Format),
    ("default", OPT, Kind::Str),
    ("minLength", OPT, Kind::Int),
    ("maxLength", OPT, Kind::Int),
    ("minGraphemes", OPT, Kind::Int),
    ("maxGraphemes", OPT, Kind::Int),
    ("enum", OPT, Kind::Strs),
    ("const", OPT, Kind::Str),
    ("knownValues", OPT, Kind::Strs),
];
const BYTES: &[Field] = &[("maxLength", OPT, Kind::Int), ("minLength", OPT, Kind::Int)];
const BLOB: &[Field] = &[("accept", OPT, Kind::Strs), ("maxSize", OPT, Kind::Int)];
const NOTHING: &[Field] = &[];
const REF: &[Field] = &[("ref", REQ, Kind::Str)];
const REF_UNION: &[Field] = &[("refs", REQ, Kind::Strs), ("closed", OPT, Kind::Bool)];
const ARRAY: &[Field] =
    &[("items", REQ, Kind::Typed(Union::ArrayItem)), ("minLength", OPT, Kind::Int), ("maxLength", OPT, Kind::Int)];
const OBJECT: &[Field] =
    &[("properties", REQ, Kind::Dict(Union::Property)), ("required", OPT, Kind::Strs), ("nullable", OPT, Kind::Strs)];
const RECORD: &[Field] = &[("record", REQ, Kind::Typed(Union::Object)), ("key", REQ, Kind::RecordKey)];
const PARAMS: &[Field] = &[("properties", REQ, Kind::Dict(Union::Param)), ("required", OPT, Kind::Strs)];
const PARAM_ARRAY: &[Field] =
    &[("items", REQ, Kind::Typed(Union::ParamItem)), ("minLength", OPT, Kind::Int), ("maxLength", OPT, Kind::Int)];
const PAYLOAD: &[Field] = &[("encoding", REQ, Kind::Encoding), ("schema", OPT, Kind::Typed(Union::PayloadSchema))];
const ERROR: &[Field] = &[("name", REQ, Kind::NonEmptyStr)];
const QUERY: &[Field] = &[
    ("parameters", OPT, Kind::Typed(Union::Params)),
    ("output", OPT, Kind::Shape(PAYLOAD)),
    ("errors", OPT, Kind::Shapes(ERROR)),
];
const PROCEDURE: &[Field] = &[
    ("parameters", OPT, Kind::Typed(Union::Params)),
    ("input", OPT, Kind::Shape(PAYLOAD)),
    ("output", OPT, Kind::Shape(PAYLOAD)),
    ("errors", OPT, Kind::Shapes(ERROR)),
];
const MESSAGE: &[Field] = &[("schema", REQ, Kind::Typed(Union::Refs))];
const SUBSCRIPTION: &[Field] = &[
    ("parameters", OPT, Kind::Typed(Union::Params)),
    ("message", REQ, Kind::Shape(MESSAGE)),
    ("errors", OPT, Kind::Shapes(ERROR)),
];
const PERMISSION_SET: &[Field] = &[
    ("permissions", REQ, Kind::Permissions),
    ("title", OPT, Kind::Str),
    ("title:lang", OPT, Kind::LangMap),
    ("detail", OPT, Kind::Str),
    ("detail:lang", OPT, Kind::LangMap),
];

/// The discriminated unions of `lexicon-document.js`: which `type`s a place allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Union {
    /// `defs.main`: `MAIN_LEXICON_SCHEMAS`.
    Main,
    /// Every other def: `NAMED_LEXICON_SCHEMAS`.
    Named,
    /// Array items: `ARRAY_ITEMS_SCHEMAS`.
    ArrayItem,
    /// Object properties: `ARRAY_ITEMS_SCHEMAS` and `array`.
    Property,
    /// Params properties: `boolean`, `integer`, `string`, an array of those.
    Param,
    /// Items of a params array.
    ParamItem,
    /// A payload `schema`: `ref`, `union`, `object`.
    PayloadSchema,
    /// Exactly an `object` (a record's `record`).
    Object,
    /// Exactly a `union` (a subscription message's `schema`).
    Refs,
    /// Exactly `params`.
    Params,
}

impl Union {
    /// The fields of `ty` if this union allows it.
    fn variant(self, ty: &str) -> Option<&'static [Field]> {
        let concrete = matches!(ty, "boolean" | "integer" | "string" | "bytes" | "cid-link" | "blob");
        let allowed = match self {
            Union::Main => {
                concrete
                    || matches!(
                        ty,
                        "array"
                            | "object"
                            | "token"
                            | "permission-set"
                            | "procedure"
                            | "query"
                            | "record"
                            | "subscription"
                    )
            }
            Union::Named => concrete || matches!(ty, "array" | "object" | "token"),
            Union::ArrayItem => concrete || matches!(ty, "unknown" | "ref" | "union"),
            Union::Property => concrete || matches!(ty, "unknown" | "ref" | "union" | "array"),
            Union::Param => matches!(ty, "boolean" | "integer" | "string" | "array"),
            Union::ParamItem => matches!(ty, "boolean" | "integer" | "string"),
            Union::PayloadSchema => matches!(ty, "ref" | "union" | "object"),
            Union::Object => ty == "object",
            Union::Refs => ty == "union",
            Union::Params => ty == "params",
        };
        if !allowed {
            return None;
        }
        Some(match ty {
            "boolean" => BOOLEAN,
            "integer" => INTEGER,
            "string" => STRING,
            "bytes" => BYTES,
            "blob" => BLOB,
            "ref" => REF,
            "union" => REF_UNION,
            "array" if self == Union::Param => PARAM_ARRAY,
            "array" => ARRAY,
            "object" => OBJECT,
            "record" => RECORD,
            "params" => PARAMS,
            "query" => QUERY,
            "procedure" => PROCEDURE,
            "subscription" => SUBSCRIPTION,
            "permission-set" => PERMISSION_SET,
            // cid-link, unknown, token: a description at most.
            _ => NOTHING,
        })
    }
}

fn fail(path: impl Into<String>, reason: LexiconReason) -> LexiconError {
    LexiconError { path: path.into(), reason }
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

fn object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, LexiconError> {
    v.as_object().ok_or_else(|| fail(path, LexiconReason::Expected("an object")))
}

/// An object whose `type` the union allows, with that type's fields.
fn check_typed(v: &Value, union: Union, path: &str) -> Result<(), LexiconError> {
    let obj = object(v, path)?;
    let ty = obj.get("type").ok_or_else(|| fail(child(path, "type"), LexiconReason::Missing))?;
    let fields =
        ty.as_str().and_then(|t| union.variant(t)).ok_or_else(|| fail(child(path, "type"), LexiconReason::Type))?;
    check_fields(obj, fields, path)?;
    // `requirePropertiesRefinement` of `object` and `params`.
    if let (Some(Value::Array(required)), Some(Value::Object(properties))) =
        (obj.get("required"), obj.get("properties"))
        && !required.iter().filter_map(Value::as_str).all(|name| properties.contains_key(name))
    {
        return Err(fail(child(path, "required"), LexiconReason::RequiredNotDefined));
    }
    Ok(())
}

/// The known fields of an object (and its optional `description`); other keys pass.
fn check_fields(obj: &Map<String, Value>, fields: &[Field], path: &str) -> Result<(), LexiconError> {
    const DESCRIPTION: Field = ("description", OPT, Kind::Str);
    for &(name, required, kind) in std::iter::once(&DESCRIPTION).chain(fields) {
        match obj.get(name) {
            Some(v) => check_kind(v, kind, &child(path, name))?,
            None if required => return Err(fail(child(path, name), LexiconReason::Missing)),
            None => {}
        }
    }
    Ok(())
}

fn check_kind(v: &Value, kind: Kind, path: &str) -> Result<(), LexiconError> {
    let ok = match kind {
        Kind::Str => v.is_string(),
        Kind::NonEmptyStr => v.as_str().is_some_and(|s| !s.is_empty()),
        Kind::Int => is_safe_integer(v),
        Kind::Bool => v.is_boolean(),
        Kind::Strs => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
        Kind::Ints => v.as_array().is_some_and(|a| a.iter().all(is_safe_integer)),
        Kind::Nsid => v.as_str().is_some_and(crate::config::is_nsid),
        Kind::Format => v.as_str().is_some_and(|f| STRING_FORMATS.contains(&f)),
        Kind::RecordKey => v.as_str().is_some_and(is_lexicon_record_key),
        Kind::Encoding => v.as_str().is_some_and(|e| !e.contains([',', ';', ' '])),
        Kind::LangMap => return check_lang_map(v, path),
        Kind::Typed(union) => return check_typed(v, union, path),
        Kind::Dict(union) => {
            for (key, value) in object(v, path)? {
                check_typed(value, union, &child(path, key))?;
            }
            true
        }
        Kind::Shape(fields) => return check_fields(object(v, path)?, fields, path),
        Kind::Shapes(fields) => {
            let list = v.as_array().ok_or_else(|| fail(path, LexiconReason::Expected("an array")))?;
            for (i, item) in list.iter().enumerate() {
                let at = format!("{path}[{i}]");
                check_fields(object(item, &at)?, fields, &at)?;
            }
            true
        }
        Kind::Permissions => return check_permissions(v, path),
    };
    if ok { Ok(()) } else { Err(fail(path, LexiconReason::Expected(kind.expected()))) }
}

impl Kind {
    fn expected(self) -> &'static str {
        match self {
            Kind::Str => "a string",
            Kind::NonEmptyStr => "a non-empty string",
            Kind::Int => "a safe integer",
            Kind::Bool => "a boolean",
            Kind::Strs => "an array of strings",
            Kind::Ints => "an array of safe integers",
            Kind::Nsid => "an NSID",
            Kind::Format => "a known string format",
            Kind::RecordKey => "any, nsid, tid or literal:<record key>",
            Kind::Encoding => "one MIME type without parameters",
            Kind::LangMap => "an object of language tags to strings",
            Kind::Typed(_) | Kind::Dict(_) | Kind::Shape(_) => "an object",
            Kind::Shapes(_) | Kind::Permissions => "an array of objects",
        }
    }
}

/// `permissions`: every entry a permission (`lexiconPermissionSchema`).
fn check_permissions(v: &Value, path: &str) -> Result<(), LexiconError> {
    let list = v.as_array().ok_or_else(|| fail(path, LexiconReason::Expected("an array")))?;
    for (i, entry) in list.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let obj = object(entry, &at)?;
        match obj.get("type") {
            Some(Value::String(t)) if t == "permission" => {}
            None => return Err(fail(child(&at, "type"), LexiconReason::Missing)),
            Some(_) => return Err(fail(child(&at, "type"), LexiconReason::NotPermission)),
        }
        match obj.get("resource") {
            Some(Value::String(r)) if !r.is_empty() => {}
            None => return Err(fail(child(&at, "resource"), LexiconReason::Missing)),
            Some(_) => return Err(fail(child(&at, "resource"), LexiconReason::Expected("a non-empty string"))),
        }
        for (key, value) in obj.iter().filter(|(k, _)| *k != "type" && *k != "resource") {
            if !is_param(value) {
                return Err(fail(
                    child(&at, key),
                    LexiconReason::Expected("a boolean, integer or string, or an array of one of those"),
                ));
            }
        }
    }
    Ok(())
}

/// `paramSchema`: a scalar, or an array all of booleans, all of integers or all of strings.
fn is_param(v: &Value) -> bool {
    match v {
        Value::Bool(_) | Value::String(_) => true,
        Value::Number(_) => is_safe_integer(v),
        Value::Array(a) => {
            a.iter().all(Value::is_boolean) || a.iter().all(is_safe_integer) || a.iter().all(Value::is_string)
        }
        Value::Null | Value::Object(_) => false,
    }
}

fn check_lang_map(v: &Value, path: &str) -> Result<(), LexiconError> {
    for (tag, text) in object(v, path)? {
        if !is_language(tag) {
            return Err(fail(child(path, tag), LexiconReason::Expected("a BCP 47 language tag")));
        }
        if !text.is_string() {
            return Err(fail(child(path, tag), LexiconReason::Expected("a string")));
        }
    }
    Ok(())
}

/// `Number.isSafeInteger`: JSON `2.0` is the JavaScript number 2, an integer.
fn is_safe_integer(v: &Value) -> bool {
    const MAX: u64 = (1 << 53) - 1;
    let Value::Number(n) = v else { return false };
    if let Some(i) = n.as_i64() {
        i.unsigned_abs() <= MAX
    } else if let Some(u) = n.as_u64() {
        u <= MAX
    } else {
        n.as_f64().is_some_and(|f| f.fract() == 0.0 && f.abs() <= MAX as f64)
    }
}

/// `l.STRING_FORMATS` (`@atproto/lex-schema` `dist/core/string-format.js`).
const STRING_FORMATS: [&str; 11] =
    ["at-identifier", "at-uri", "cid", "datetime", "did", "handle", "language", "nsid", "record-key", "tid", "uri"];

/// `isLexiconRecordKey` (`@atproto/lex-schema` `dist/core/record-key.js`).
fn is_lexicon_record_key(key: &str) -> bool {
    matches!(key, "any" | "nsid" | "tid") || key.strip_prefix("literal:").is_some_and(is_record_key)
}

/// `isValidRecordKey` (`@atproto/syntax` `dist/recordkey.js`).
fn is_record_key(key: &str) -> bool {
    (1..=512).contains(&key.len())
        && key != "."
        && key != ".."
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"_~.:-".contains(&b))
}

/// The grandfathered tags of RFC 5646 §2.2.8, matched exactly as the reference's regexp does.
const GRANDFATHERED: [&str; 26] = [
    "en-GB-oed",
    "i-ami",
    "i-bnn",
    "i-default",
    "i-enochian",
    "i-hak",
    "i-klingon",
    "i-lux",
    "i-mingo",
    "i-navajo",
    "i-pwn",
    "i-tao",
    "i-tay",
    "i-tsu",
    "sgn-BE-FR",
    "sgn-BE-NL",
    "sgn-CH-DE",
    "art-lojban",
    "cel-gaulish",
    "no-bok",
    "no-nyn",
    "zh-guoyu",
    "zh-hakka",
    "zh-min",
    "zh-min-nan",
    "zh-xiang",
];

/// `parseLanguageString` (`@atproto/syntax` `dist/language.js`, the strict check the
/// `language` format uses): RFC 5646 §2.1 syntax, a lowercase two- or three-letter primary
/// language subtag, and no variant or extension singleton twice (§4.1, case-insensitive).
pub fn is_language(tag: &str) -> bool {
    if GRANDFATHERED.contains(&tag) {
        return true;
    }
    let subtags: Vec<&str> = tag.split('-').collect();
    let is = |s: &str, len: std::ops::RangeInclusive<usize>, f: fn(&u8) -> bool| {
        len.contains(&s.len()) && s.as_bytes().iter().all(f)
    };
    let alpha = |s: &str, len| is(s, len, u8::is_ascii_alphabetic);
    let alnum = |s: &str, len| is(s, len, u8::is_ascii_alphanumeric);
    let private_use = |rest: &[&str]| !rest.is_empty() && rest.iter().all(|s| alnum(s, 1..=8));
    if matches!(subtags[0], "x" | "X") {
        return private_use(&subtags[1..]);
    }
    if !is(subtags[0], 2..=3, u8::is_ascii_lowercase) {
        return false;
    }
    let mut rest = &subtags[1..];
    // extlang: up to three three-letter subtags.
    let extlangs = rest.iter().take(3).take_while(|s| alpha(s, 3..=3)).count();
    rest = &rest[extlangs..];
    if rest.first().is_some_and(|s| alpha(s, 4..=4)) {
        rest = &rest[1..]; // script
    }
    if rest.first().is_some_and(|s| alpha(s, 2..=2) || is(s, 3..=3, u8::is_ascii_digit)) {
        rest = &rest[1..]; // region
    }
    let mut variants: Vec<String> = Vec::new();
    while let Some(s) = rest
        .first()
        .filter(|s| alnum(s, 5..=8) || (s.len() == 4 && alnum(s, 4..=4) && s.as_bytes()[0].is_ascii_digit()))
    {
        let lower = s.to_ascii_lowercase();
        if variants.contains(&lower) {
            return false;
        }
        variants.push(lower);
        rest = &rest[1..];
    }
    let mut singletons: Vec<u8> = Vec::new();
    while let Some(s) = rest.first().filter(|s| s.len() == 1 && alnum(s, 1..=1) && !s.eq_ignore_ascii_case("x")) {
        let singleton = s.as_bytes()[0].to_ascii_lowercase();
        let values = rest[1..].iter().take_while(|s| alnum(s, 2..=8)).count();
        if singletons.contains(&singleton) || values == 0 {
            return false;
        }
        singletons.push(singleton);
        rest = &rest[1 + values..];
    }
    match rest.first() {
        None => true,
        Some(&("x" | "X")) => private_use(&rest[1..]),
        Some(_) => false,
    }
}
