//! What the top level of a JSON text says about the bridge, read as the text streams past,
//! without building anything: the agent's answers are told from its other messages by their
//! top-level `type` whatever the JSON writer did (whitespace, key order, escapes), and a
//! message shaped like a request is caught on its way to an agent (docs/bridge.md, "How the
//! relay reads the agent's messages").
//!
//! Only the structure is read: objects, arrays, strings (escapes decoded where it matters),
//! and the placement of `:` and `,`. Any other run of letters, digits, `+`, `-` and `.` is
//! taken as a scalar without judging it, and a control character inside a string is let
//! through. So the reading is a little more liberal than RFC 8259 (Python's `NaN`, a number
//! like `01`, a raw tab in a string all pass), which is the safe side for the request check:
//! whatever a lenient agent-side parser could read as a top-level member, this reads too.
//! Strict checking of an answer is `message::parse_response`'s job.

/// The `type` values the relay cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    HttpResponse,
    HttpRequest,
    /// Any other value, a string or not.
    Other,
}

/// Below this depth containers are only counted (strings still read whole, so a bracket in
/// one is not taken for structure): the top level is all that matters, and depth then costs
/// no memory.
const CHECKED_DEPTH: u32 = 256;
/// Top-level keys are kept only as far as needed to compare them with `type` and `id`.
const KEY_KEEP: usize = 4;
/// A kept top-level string value: `id` (at most `message::MAX_ID_LEN`) or a `type`.
const VALUE_KEEP: usize = super::message::MAX_ID_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the top-level value.
    Start,
    /// A value must come (after `:`, `,` in an array).
    Value,
    /// After `[`: a value or `]`.
    ArrayFirst,
    /// After `{`: a key or `}`.
    ObjectFirst,
    /// After `,` in an object: a key.
    Key,
    /// After a key: `:`.
    Colon,
    /// After a value: `,`, the closer, or (at the top) the end.
    After,
    /// Inside a string.
    Str,
    /// Inside a bare scalar.
    Scalar,
    /// Inside containers below `CHECKED_DEPTH`: only brackets and strings are followed.
    Deep,
    /// The top-level value is complete: only whitespace may follow.
    End,
    /// Not JSON: nothing after this point is read.
    Invalid,
    /// What the reader was asked to find is found (`Goal`): nothing more is read.
    Found,
}

/// What a reader is for, so it can stop as soon as more reading would change nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// Everything: read to the end.
    All,
    /// Whether an agent's message is an answer: until the first top-level `type` decides,
    /// and for an answer until its `id` is read too.
    Answer,
    /// Whether a message towards an agent is a request: until a request's type is found.
    Request,
}

/// Inside a string: where an escape stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    None,
    Backslash,
    /// `\u` and this many hex digits read so far, with their value.
    Unicode(u8, u32),
}

/// What the current top-level member's key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    /// Exactly `type`.
    Type,
    /// `type` in another case (`Type`, `TYPE`): Go's encoding/json matches field names
    /// ignoring case, so an agent written in Go would read it as the type.
    TypeFolded,
    /// Exactly `id`.
    Id,
    Other,
}

/// What a string is, for the small decoded copy kept of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kept {
    Nothing,
    TopKey,
    TopValue,
}

/// A bounded decoded copy of a string: only its first `N` bytes matter.
#[derive(Debug, Clone, Copy)]
struct Small<const N: usize> {
    bytes: [u8; N],
    len: u8,
    /// Longer than `N`, or holding a character escaped as non-ASCII: matches nothing.
    spoilt: bool,
}

impl<const N: usize> Small<N> {
    const EMPTY: Small<N> = Small {
        bytes: [0; N],
        len: 0,
        spoilt: false,
    };

    fn push(&mut self, b: u8) {
        if (self.len as usize) < N {
            self.bytes[self.len as usize] = b;
            self.len += 1;
        } else {
            self.spoilt = true;
        }
    }

    fn clear(&mut self) {
        self.len = 0;
        self.spoilt = false;
    }

    fn extend(&mut self, run: &[u8]) {
        let at = self.len as usize;
        if at + run.len() <= N {
            // A loop rather than `copy_from_slice`: runs here are a few bytes, and a call to
            // memcpy costs more than copying them.
            for (d, s) in self.bytes[at..at + run.len()].iter_mut().zip(run) {
                *d = *s;
            }
            self.len += run.len() as u8;
        } else if !run.is_empty() {
            self.spoilt = true;
        }
    }

    fn get(&self) -> Option<&[u8]> {
        (!self.spoilt).then(|| &self.bytes[..self.len as usize])
    }
}

/// The streaming reader. Feed it the text in pieces of any size; ask it at any time what it
/// has learnt so far.
#[derive(Debug, Clone)]
pub struct Sniff {
    goal: Goal,
    state: State,
    /// Open containers; the top-level object is depth 1.
    depth: u32,
    /// Bit `d` set: the container at depth `d + 1` is an object (checked depths only).
    objects: [u64; (CHECKED_DEPTH / 64) as usize],
    /// The top-level value is an object.
    root_object: bool,
    escape: Escape,
    /// The string being read is an object's key.
    in_key: bool,
    kept: Kept,
    key: Small<KEY_KEEP>,
    key_kind: Key,
    value: Small<VALUE_KEEP>,
    /// The first top-level member named exactly `type`, once its value was read.
    first_type: Option<Kind>,
    /// Some top-level member named `type` in any case has the value `"http_request"`.
    request_like: bool,
    /// The first top-level `id` with a string value of 1 to 64 characters.
    id: Option<Small<VALUE_KEEP>>,
    /// The text is not an object, seen at its first byte: that byte decided without being
    /// read as part of anything (a reader with a goal stops before it).
    not_object: bool,
}

impl Default for Sniff {
    fn default() -> Self {
        Sniff::new(Goal::All)
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn is_scalar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')
}

/// Where the next `"` or `\\` is. Most strings in a message are short (keys, small values):
/// a plain loop finds those sooner than setting up a vector search, which takes the rest.
fn quote_or_backslash(bytes: &[u8]) -> Option<usize> {
    const SHORT: usize = 32;
    let head = &bytes[..bytes.len().min(SHORT)];
    if let Some(n) = head.iter().position(|&c| c == b'"' || c == b'\\') {
        return Some(n);
    }
    memchr::memchr2(b'"', b'\\', &bytes[head.len()..]).map(|n| n + head.len())
}

/// The first byte of `bytes` that is not JSON whitespace, once unmasked with `mask` (the
/// payload's first byte at mask offset 0).
pub fn first_non_ws(bytes: &[u8], mask: [u8; 4]) -> Option<u8> {
    bytes
        .iter()
        .enumerate()
        .map(|(k, b)| b ^ mask[k % 4])
        .find(|b| !is_ws(*b))
}

impl Sniff {
    /// Starts over for a new text, without rewriting the buffers (only their lengths).
    pub fn reset(&mut self, goal: Goal) {
        self.goal = goal;
        self.state = State::Start;
        self.depth = 0;
        self.root_object = false;
        self.escape = Escape::None;
        self.in_key = false;
        self.kept = Kept::Nothing;
        self.key.clear();
        self.key_kind = Key::Other;
        self.value.clear();
        self.first_type = None;
        self.request_like = false;
        self.id = None;
        self.not_object = false;
    }

    pub fn new(goal: Goal) -> Sniff {
        Sniff {
            goal,
            state: State::Start,
            depth: 0,
            objects: [0; (CHECKED_DEPTH / 64) as usize],
            root_object: false,
            escape: Escape::None,
            in_key: false,
            kept: Kept::Nothing,
            key: Small::EMPTY,
            key_kind: Key::Other,
            value: Small::EMPTY,
            first_type: None,
            request_like: false,
            id: None,
            not_object: false,
        }
    }

    /// For an answer: `Some(true)` once the first top-level `type` member reads
    /// `"http_response"`, `Some(false)` once it reads anything else, or the text is not
    /// JSON, or it ended without one; `None` while undecided. `ended`: the whole text was fed.
    pub fn answer(&self, ended: bool) -> Option<bool> {
        match self.first_type {
            Some(k) => Some(k == Kind::HttpResponse),
            None if ended || matches!(self.state, State::Invalid | State::End | State::Found) => {
                Some(false)
            }
            None => None,
        }
    }

    /// Settles, without reading, that the text matches nothing sought (its caller knows it
    /// cannot): not an answer, not a request. Nothing more is read.
    pub fn settle_not_matching(&mut self) {
        self.state = State::Found;
    }

    /// Stops reading once the goal is met.
    fn check_goal(&mut self) {
        let met = match self.goal {
            Goal::All => false,
            Goal::Request => self.request_like,
            Goal::Answer => match self.first_type {
                Some(Kind::HttpResponse) => self.id.is_some(),
                Some(_) => true,
                None => false,
            },
        };
        if met {
            self.state = State::Found;
        }
    }

    /// Whether any top-level member named `type` (in any letter case) has the string value
    /// `"http_request"`, in what was read so far. Python and JavaScript keep the last of
    /// repeated keys, Go matches keys ignoring case: any of them makes it a request to some
    /// agent, so any of them counts.
    pub fn request_like(&self) -> bool {
        self.request_like
    }

    /// The first top-level `type` member's value, once read.
    pub fn first_type(&self) -> Option<Kind> {
        self.first_type
    }

    /// The first top-level `id` that is a string of 1 to 64 bytes without escapes beyond ASCII.
    pub fn id(&self) -> Option<&str> {
        let id = self.id.as_ref()?.get()?;
        std::str::from_utf8(id).ok()
    }

    /// The text so far is JSON up to where it stops (nothing out of place yet), as far as it
    /// was read.
    pub fn valid_so_far(&self) -> bool {
        self.state != State::Invalid
    }

    /// The goal was met: the rest of the text is not read.
    pub fn found(&self) -> bool {
        self.state == State::Found
    }

    /// The top-level value is complete (only whitespace may follow).
    pub fn complete(&self) -> bool {
        self.state == State::End
    }

    /// Reads the next piece of the text. Returns how many of its bytes were read: all of
    /// them, unless the goal was met in it or the text proved not JSON (then up to and
    /// including the byte that decided it).
    pub fn feed(&mut self, bytes: &[u8]) -> usize {
        let mut i = 0;
        while i < bytes.len() {
            match self.state {
                State::Str => i += self.string(&bytes[i..]),
                State::Scalar => {
                    let rest = &bytes[i..];
                    let n = rest.iter().position(|&b| !is_scalar(b));
                    i += n.unwrap_or(rest.len());
                    if n.is_some() {
                        // The byte that ended the scalar is read in the state after it.
                        self.end_value();
                    }
                }
                State::Found | State::Invalid => return i,
                _ => {
                    let b = bytes[i];
                    i += 1;
                    if !is_ws(b) {
                        self.byte(b);
                        if self.not_object {
                            return i - 1;
                        }
                    }
                }
            }
        }
        i
    }

    fn fail(&mut self) {
        self.state = State::Invalid;
    }

    fn top_member_value(&self) -> bool {
        self.depth == 1 && self.root_object
    }

    /// One byte outside strings and scalars, not whitespace.
    fn byte(&mut self, b: u8) {
        match self.state {
            State::Start | State::Value | State::ArrayFirst => {
                if self.state == State::ArrayFirst && b == b']' {
                    self.close(false);
                } else {
                    self.value_start(b);
                }
            }
            State::ObjectFirst | State::Key => {
                if self.state == State::ObjectFirst && b == b'}' {
                    self.close(true);
                } else if b == b'"' {
                    let kept = if self.top_member_value() {
                        Kept::TopKey
                    } else {
                        Kept::Nothing
                    };
                    self.start_string(kept, true);
                } else {
                    self.fail();
                }
            }
            State::Colon => {
                if b == b':' {
                    self.state = State::Value;
                } else {
                    self.fail();
                }
            }
            State::After => match b {
                b',' if self.depth > 0 => {
                    self.state = if self.is_object() {
                        State::Key
                    } else {
                        State::Value
                    };
                }
                b'}' | b']' if self.depth > 0 => self.close(b == b'}'),
                _ => self.fail(),
            },
            State::Deep => match b {
                b'"' => self.start_string(Kept::Nothing, false),
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth -= 1;
                    self.end_value();
                }
                _ => {}
            },
            State::End => self.fail(),
            State::Str | State::Scalar | State::Invalid | State::Found => {
                unreachable!("handled by feed")
            }
        }
    }

    fn is_object(&self) -> bool {
        let d = self.depth - 1;
        self.objects[(d / 64) as usize] & (1 << (d % 64)) != 0
    }

    fn value_start(&mut self, b: u8) {
        if self.depth == 0 && b != b'{' && self.goal != Goal::All {
            // Neither an answer nor a request can be anything but an object.
            self.not_object = true;
            self.state = State::Found;
            return;
        }
        let member = self.top_member_value();
        if member && self.key_kind == Key::Type && self.first_type.is_none() && b != b'"' {
            self.first_type = Some(Kind::Other);
            self.check_goal();
            if self.state == State::Found {
                return;
            }
        }
        match b {
            b'{' | b'[' => {
                let object = b == b'{';
                if self.depth == 0 {
                    self.root_object = object;
                }
                let d = self.depth;
                self.depth += 1;
                if d == CHECKED_DEPTH {
                    self.state = State::Deep;
                    return;
                }
                let (w, bit) = ((d / 64) as usize, 1u64 << (d % 64));
                if object {
                    self.objects[w] |= bit;
                } else {
                    self.objects[w] &= !bit;
                }
                self.state = if object {
                    State::ObjectFirst
                } else {
                    State::ArrayFirst
                };
            }
            b'"' => {
                let kept = if member && self.key_kind != Key::Other {
                    Kept::TopValue
                } else {
                    Kept::Nothing
                };
                self.start_string(kept, false);
            }
            _ if is_scalar(b) => self.state = State::Scalar,
            _ => self.fail(),
        }
    }

    fn close(&mut self, object: bool) {
        if self.depth == 0 || self.is_object() != object {
            self.fail();
            return;
        }
        self.depth -= 1;
        self.end_value();
    }

    /// A value (or a container) just ended.
    fn end_value(&mut self) {
        self.state = match self.depth {
            // For an answer the end of the top level decides (it had no type, or it was
            // decided already): nothing after it is read.
            0 if self.goal == Goal::Answer => State::Found,
            0 => State::End,
            d if d > CHECKED_DEPTH => State::Deep,
            _ => State::After,
        };
    }

    fn start_string(&mut self, kept: Kept, key: bool) {
        self.state = State::Str;
        self.escape = Escape::None;
        self.in_key = key;
        self.kept = kept;
        match kept {
            Kept::TopKey => self.key.clear(),
            Kept::TopValue => self.value.clear(),
            Kept::Nothing => {}
        }
    }

    fn keep(&mut self, b: u8) {
        match self.kept {
            Kept::TopKey => self.key.push(b),
            Kept::TopValue => self.value.push(b),
            Kept::Nothing => {}
        }
    }

    fn keep_run(&mut self, run: &[u8]) {
        match self.kept {
            Kept::TopKey => self.key.extend(run),
            Kept::TopValue => self.value.extend(run),
            Kept::Nothing => {}
        }
    }

    fn spoil(&mut self) {
        match self.kept {
            Kept::TopKey => self.key.spoilt = true,
            Kept::TopValue => self.value.spoilt = true,
            Kept::Nothing => {}
        }
    }

    /// Reads string bytes; returns how many were used. Runs without a quote or a backslash
    /// are found with `memchr` and taken (or skipped) whole.
    fn string(&mut self, bytes: &[u8]) -> usize {
        let mut i = 0;
        while i < bytes.len() {
            match self.escape {
                Escape::None => {
                    let rest = &bytes[i..];
                    let Some(n) = quote_or_backslash(rest) else {
                        self.keep_run(rest);
                        return bytes.len();
                    };
                    self.keep_run(&rest[..n]);
                    i += n + 1;
                    if rest[n] == b'"' {
                        self.end_string();
                        return i;
                    }
                    self.escape = Escape::Backslash;
                }
                Escape::Backslash => {
                    let b = bytes[i];
                    i += 1;
                    self.escape = Escape::None;
                    let c = match b {
                        b'u' => {
                            self.escape = Escape::Unicode(0, 0);
                            continue;
                        }
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        // `\"`, `\\`, `\/`; any other escape is not JSON, but a lenient
                        // reader would take the character itself.
                        other => other,
                    };
                    self.keep(c);
                }
                Escape::Unicode(n, v) => {
                    let b = bytes[i];
                    i += 1;
                    let Some(d) = (b as char).to_digit(16) else {
                        self.fail();
                        return i;
                    };
                    let v = (v << 4) | d;
                    if n == 3 {
                        self.escape = Escape::None;
                        if v < 0x80 {
                            self.keep(v as u8);
                        } else {
                            self.spoil();
                        }
                    } else {
                        self.escape = Escape::Unicode(n + 1, v);
                    }
                }
            }
        }
        i
    }

    fn end_string(&mut self) {
        match self.kept {
            Kept::TopKey => {
                self.key_kind = match self.key.get() {
                    Some(b"type") => Key::Type,
                    Some(k) if k.eq_ignore_ascii_case(b"type") => Key::TypeFolded,
                    Some(b"id") => Key::Id,
                    _ => Key::Other,
                };
            }
            Kept::TopValue => {
                let v = self.value.get();
                if matches!(self.key_kind, Key::Type | Key::TypeFolded)
                    && v == Some(b"http_request")
                {
                    self.request_like = true;
                }
                if self.key_kind == Key::Type && self.first_type.is_none() {
                    self.first_type = Some(match v {
                        Some(b"http_response") => Kind::HttpResponse,
                        Some(b"http_request") => Kind::HttpRequest,
                        _ => Kind::Other,
                    });
                }
                if self.key_kind == Key::Id && self.id.is_none() && v.is_some_and(|v| !v.is_empty())
                {
                    self.id = Some(self.value);
                }
            }
            Kept::Nothing => {}
        }
        let was_value = self.kept == Kept::TopValue;
        self.kept = Kept::Nothing;
        if self.in_key {
            self.state = State::Colon;
        } else {
            self.end_value();
            if was_value {
                self.check_goal();
            }
        }
    }
}

/// Reads a whole text at once.
pub fn sniff(json: &[u8]) -> Sniff {
    let mut s = Sniff::new(Goal::All);
    s.feed(json);
    s
}

#[cfg(test)]
mod differential;

#[cfg(test)]
mod tests {
    use super::*;

    fn in_pieces(json: &[u8], size: usize) -> Sniff {
        let mut s = Sniff::new(Goal::All);
        for p in json.chunks(size.max(1)) {
            s.feed(p);
        }
        s
    }

    /// The same findings however the text is cut.
    fn read(json: &str) -> Sniff {
        let whole = sniff(json.as_bytes());
        for size in [1, 2, 3, 5, 7, 64] {
            let p = in_pieces(json.as_bytes(), size);
            assert_eq!(
                (p.first_type, p.request_like, p.id(), p.state),
                (
                    whole.first_type,
                    whole.request_like,
                    whole.id(),
                    whole.state
                ),
                "{json} in pieces of {size}"
            );
        }
        whole
    }

    #[test]
    fn answers_are_found_whatever_the_writer() {
        let answers = [
            r#"{"type":"http_response","id":"1a","status":200}"#,
            // Python's json.dumps defaults.
            r#"{"type": "http_response", "id": "1a", "status": 200, "headers": [], "body_b64": ""}"#,
            r#"{"id":"1a","status":200,"type":"http_response"}"#,
            "{\n  \"id\": \"1a\",\n  \"headers\": [\n    [\"a\", \"b\"]\n  ],\n  \"type\": \"http_response\"\n}",
            " \r\n\t{\"type\"\t:\r\"http_response\" , \"id\":\"1a\"}  ",
            r#"{"t\u0079pe":"http\u005fresponse","id":"1a"}"#,
            r#"{"nested":{"type":"x","a":[{"type":"y"}]},"type":"http_response","id":"1a"}"#,
        ];
        for a in answers {
            let s = read(a);
            assert_eq!(s.answer(true), Some(true), "{a}");
            assert_eq!(s.id(), Some("1a"), "{a}");
            assert!(!s.request_like(), "{a}");
        }
    }

    #[test]
    fn other_messages_are_not_answers() {
        let others = [
            r#"{"type":"chat","text":"{\"type\":\"http_response\"}"}"#,
            r#"{"kind":"http_response"}"#,
            r#"{"nested":{"type":"http_response"}}"#,
            r#"["type","http_response"]"#,
            r#"{"type":"http_responses"}"#,
            r#"{"type":"HTTP_RESPONSE"}"#,
            r#"{"type":["http_response"]}"#,
            r#"{"type":1,"type":"http_response"}"#,
            r#"{"Type":"http_response"}"#,
            r#"{"type":"http_response\u00e9"}"#,
            r#"{"type" "http_response"}"#,
            r#"{"a":1 "type":"http_response"}"#,
            r#"{"a":}"#,
            "\"http_response\"",
            "",
            "{",
        ];
        for o in others {
            let s = read(o);
            assert_eq!(s.answer(true), Some(false), "{o}");
        }
    }

    #[test]
    fn the_decision_comes_as_soon_as_the_first_type_is_read() {
        let mut s = Sniff::new(Goal::All);
        s.feed(br#"{"id":"7","type":"http_re"#);
        assert_eq!(s.answer(false), None);
        s.feed(br#"sponse","body_b64":"AAAA"#);
        assert_eq!(s.answer(false), Some(true));
        assert_eq!(s.id(), Some("7"));
        let mut s = Sniff::new(Goal::All);
        s.feed(br#"{"type":"note","#);
        assert_eq!(s.answer(false), Some(false));
        // Broken before any type: decided, not an answer.
        let mut s = Sniff::new(Goal::All);
        s.feed(br#"{"a":1]"#);
        assert_eq!(s.answer(false), Some(false));
    }

    #[test]
    fn requests_are_caught_in_every_spelling_a_lenient_agent_reads() {
        let requests = [
            r#"{"type":"http_request","id":"x","method":"GET","path":"/"}"#,
            r#"{"id":"x", "type": "http_request"}"#,
            r#"{"type":"chat","type":"http_request"}"#,
            r#"{"TYPE":"http_request"}"#,
            r#"{"Type":"http_request"}"#,
            r#"{"\u0074ype":"http\u005frequest"}"#,
            r#"{"n":NaN,"m":-Infinity,"o":01,"type":"http_request"}"#,
            "{\"s\":\"raw\ttab\",\"type\":\"http_request\"}",
            r#"{"type":"http_request""#,
        ];
        for r in requests {
            assert!(read(r).request_like(), "{r}");
        }
        let not = [
            r#"{"type":"http_response"}"#,
            r#"{"data":{"type":"http_request"}}"#,
            r#"[{"type":"http_request"}]"#,
            r#"{"type":"http_request "}"#,
            r#"{"typ":"http_request"}"#,
            r#"{"types":"http_request"}"#,
            r#"{"a":"\"type\":\"http_request\""}"#,
            r#"{"a":1,,"type":"http_request"}"#,
        ];
        for n in not {
            assert!(!read(n).request_like(), "{n}");
        }
    }

    #[test]
    fn structure_is_checked_and_depth_costs_nothing() {
        for ok in [
            "{}",
            "[]",
            r#"{"a":[1,{"b":[]},"c",true,null],"d":{}}"#,
            " 12 ",
            r#""s""#,
        ] {
            let s = read(ok);
            assert!(s.complete() && s.valid_so_far(), "{ok}");
        }
        for bad in [
            "{]",
            "[}",
            r#"{"a":1,}"#,
            "[1,]",
            "{} {}",
            r#"{"a" 1}"#,
            r#"{1:2}"#,
            r#"{"a":"\u12G4"}"#,
            "}",
        ] {
            assert!(!read(bad).valid_so_far(), "{bad}");
        }
        let deep = format!(
            r#"{{"a":{}{},"type":"http_request"}}"#,
            "[".repeat(5000),
            "]".repeat(5000)
        );
        let s = read(&deep);
        assert!(s.request_like() && s.complete());
        let mismatched = format!(r#"{{"a":{}}}"#, "[".repeat(10) + &"]".repeat(9) + "}");
        assert!(!read(&mismatched).valid_so_far());
    }

    #[test]
    fn ids_are_kept_only_when_usable() {
        assert_eq!(read(r#"{"id":"ab","id":"cd"}"#).id(), Some("ab"));
        assert_eq!(read(r#"{"id":""}"#).id(), None);
        assert_eq!(read(r#"{"id":7}"#).id(), None);
        assert_eq!(read(r#"{"id":"\u00e9"}"#).id(), None);
        let long = format!(r#"{{"id":"{}"}}"#, "a".repeat(65));
        assert_eq!(read(&long).id(), None);
        let max = "b".repeat(64);
        assert_eq!(
            read(&format!(r#"{{"id":"{max}"}}"#)).id(),
            Some(max.as_str())
        );
        assert_eq!(read(r#"{"x":{"id":"in"},"id":"top"}"#).id(), Some("top"));
    }

    #[test]
    fn a_reader_stops_once_its_goal_is_met_with_the_same_findings() {
        let read = |goal, text: &str| {
            let mut s = Sniff::new(goal);
            s.feed(text.as_bytes());
            s
        };
        // An answer: the type decides, the id is still wanted (wherever it stands).
        let s = read(
            Goal::Answer,
            r#"{"type":"http_response","body_b64":"AA","id":"9","x":"#,
        );
        assert!(s.found() && s.answer(false) == Some(true) && s.id() == Some("9"));
        let s = read(Goal::Answer, r#"{"type":"http_response","body_b64":"AA"#);
        assert!(!s.found() && s.id().is_none());
        // Not an answer: decided at the type, the rest (broken or not) unread.
        let s = read(Goal::Answer, r#"{"type":{"a":1},"x":]]]"#);
        assert!(s.found() && s.answer(false) == Some(false));
        let s = read(Goal::Answer, r#"{"type":"chat","x":]]]"#);
        assert!(s.found() && s.answer(false) == Some(false));
        // A request is found wherever its type stands; anything else is read to the end.
        let s = read(Goal::Request, r#"{"type":"chat","TYPE":"http_request","#);
        assert!(s.found() && s.request_like());
        let s = read(Goal::Request, r#"{"type":"chat","x":1}"#);
        assert!(!s.found() && s.complete() && !s.request_like());
    }

    #[test]
    fn the_first_json_byte_is_found_under_the_mask() {
        let mask = [1, 2, 3, 4];
        let plain = b" \n\t{\"a\"";
        let masked: Vec<u8> = plain
            .iter()
            .enumerate()
            .map(|(k, b)| b ^ mask[k % 4])
            .collect();
        assert_eq!(first_non_ws(&masked, mask), Some(b'{'));
        assert_eq!(first_non_ws(b"  ", [0; 4]), None);
        assert_eq!(first_non_ws(b"x{", [0; 4]), Some(b'x'));
    }
}
