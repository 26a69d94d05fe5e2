package ircmsg

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParse feeds arbitrary lines to Parse, which sees whatever a server
// (or anyone able to reach the socket) sends. It must never panic; what it
// refuses it refuses with a classified one-line reason; what it accepts must
// be valid, and written back it must parse to the same message, in a line
// without CR, LF or NUL.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"PING :irc.example.net\r\n",
		":ann!ann@host.example PRIVMSG #chan :hello there\r\n",
		":irc.example.net 001 ann :Welcome",
		"@time=2024-05-01T12:00:00.000Z;msgid=abc;+draft/reply=x :a!b@c PRIVMSG #c :hi",
		`@a=b\:c\sd\\e\r\n\x\;f= TAGMSG #c`,
		"@;; PING", "@ PING", "@=x PING", "@a PING", "@a",
		"TOPIC #c :", "PRIVMSG #c ::", "AWAY", "  :s   CMD   a  b :  c  ",
		": PING", ":", "", "\r\n", "001", "01 x", "PR1V x",
		"PRIVMSG #c :a\rb", "PRIVMSG #c :a\x00b", "\xff\xfe PRIVMSG",
		":n\xff PRIVMSG #c :\xc3\x28",
		"@k=" + strings.Repeat(`\:`, 4094) + " PING",
		"PRIVMSG #c :" + strings.Repeat("x", 498),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, line string) {
		m, err := Parse(line)
		if err != nil {
			if !errors.Is(err, ErrEmpty) && !errors.Is(err, ErrTooLong) && !errors.Is(err, ErrMalformed) {
				t.Fatalf("unclassified error %v", err)
			}
			if strings.ContainsAny(err.Error(), "\r\n") {
				t.Fatalf("error is not one line: %q", err)
			}
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("Parse accepted %q but the message is invalid: %v", line, err)
		}
		out := m.String()
		if strings.ContainsAny(out, "\r\n\x00") {
			t.Fatalf("written line holds CR, LF or NUL: %q", out)
		}
		if s, err := m.Marshal(); err != nil || s != out {
			t.Fatalf("Marshal = %q, %v; String = %q", s, err, out)
		}
		back, err := Parse(out)
		if err != nil {
			t.Fatalf("%q written as %q, which does not parse: %v", line, out, err)
		}
		if !reflect.DeepEqual(back, m) {
			t.Fatalf("round trip of %q via %q\n got %#v\nwant %#v", line, out, *back, *m)
		}
		if again := back.String(); again != out {
			t.Fatalf("written form not canonical: %q then %q", out, again)
		}
	})
}

// FuzzMarshal builds messages from arbitrary parts, as the bridge does
// from chat content. Whatever the parts, the unchecked writer must not
// write CR, LF or NUL; whatever Validate accepts must read back as itself.
func FuzzMarshal(f *testing.F) {
	f.Add("msgid", "a b;c\\d\r\n", "nick!u@h", "PRIVMSG", "#c", "hello world", "", uint8(2))
	f.Add("", "", "", "privmsg", "#c", "hi\r\nQUIT :bye", "", uint8(2))
	f.Add("k", "", "a b", "001", ":x", "y", "z", uint8(3))
	f.Add("a=b", "\x00", "s\n", "PRIVMSG\r\nQUIT", "", "", ":", uint8(3))
	f.Fuzz(func(t *testing.T, key, value, source, command, p0, p1, p2 string, n uint8) {
		m := Message{Source: source, Command: command, Params: []string{p0, p1, p2}[:n%4]}
		if key != "" || value != "" {
			m.Tags = map[string]string{key: value}
		}
		out := m.String()
		if strings.ContainsAny(out, "\r\n\x00") {
			t.Fatalf("String wrote CR, LF or NUL: %q", out)
		}
		s, err := m.Marshal()
		if verr := m.Validate(); (verr == nil) != (err == nil) {
			t.Fatalf("Validate = %v but Marshal = %v", verr, err)
		}
		if err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrTooLong) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		if s != out {
			t.Fatalf("Marshal = %q, String = %q", s, out)
		}
		back, err := Parse(s)
		if err != nil {
			t.Fatalf("valid %#v written as %q, which does not parse: %v", m, s, err)
		}
		if want := normalized(m); !reflect.DeepEqual(*back, want) {
			t.Fatalf("written as %q\n got %#v\nwant %#v", s, *back, want)
		}
	})
}

// FuzzSplitText checks SplitText's promises (see checkSplit: among them,
// no grapheme cluster is cut unless it alone is longer than a message) for
// arbitrary text, targets, prefix lengths and line limits up to MaxLineLen.
func FuzzSplitText(f *testing.F) {
	f.Add(uint16(60), "#chan", "hello world", uint16(0))
	f.Add(uint16(0), "#c", strings.Repeat("\U0001F600", 200), uint16(100))
	f.Add(uint16(30), "nick", "日本語 テキスト\n\nnext line\r\n  indented", uint16(40))
	f.Add(uint16(10), "#c", Action("waves at everyone "+strings.Repeat("ab ", 100)), uint16(60))
	f.Add(uint16(10), "#c", "\x01VERSION\x01", uint16(0))
	f.Add(uint16(10), "#c", "\x01"+strings.Repeat("C", 40)+" x\x01", uint16(60))
	f.Add(uint16(0), "#c", "\xf0\x9f\x98abc\xff\xfe  \t\x00x", uint16(20))
	f.Add(uint16(500), "#c", "no room", uint16(0))
	// Grapheme clusters: none may be cut (families, skin tones, flags,
	// variation selectors, a space carrying a combining mark).
	f.Add(uint16(0), "#c", strings.Repeat("\U0001f468\u200d\U0001f469\u200d\U0001f467", 30), uint16(60))
	f.Add(uint16(0), "#c", strings.Repeat("\U0001f44b\U0001f3fd\U0001f1eb\U0001f1f7\u2764\ufe0f", 30), uint16(50))
	f.Add(uint16(0), "#c", "abc \u0301def "+strings.Repeat("e\u0301", 40), uint16(40))
	f.Add(uint16(0), "#c", strings.Repeat("\U0001f1e6", 41), uint16(30))
	f.Fuzz(func(t *testing.T, prefixLen uint16, target, text string, maxLine uint16) {
		p, limit := int(prefixLen%600), int(maxLine%(MaxLineLen+1))
		got := SplitText(p, target, text, limit)
		checkSplit(t, p, target, text, limit, got)
	})
}

// FuzzStripFormatting checks that stripping leaves no formatting code,
// changes nothing a second time, only removes bytes, keeps every byte that
// cannot belong to a code, and keeps valid UTF-8 valid.
func FuzzStripFormatting(f *testing.F) {
	for _, seed := range []string{
		"plain", "\x02b\x02\x1di\x1d\x1fu\x1f\x1es\x1e\x11m\x11\x16r\x16\x0f",
		"\x034,12x\x03,5\x0399\x03", "\x04FF0000,00ff00x\x04abc\x04",
		"日本\x02語", "\xff\x03\xfe", "\x03\x03\x031\x03,\x04\x04",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := StripFormatting(s)
		for i := 0; i < len(out); i++ {
			if isFormatting[out[i]] {
				t.Fatalf("StripFormatting(%q) = %q still holds %#x", s, out, out[i])
			}
		}
		if again := StripFormatting(out); again != out {
			t.Fatalf("not idempotent: %q then %q", out, again)
		}
		// out is a subsequence of s ...
		j := 0
		for i := 0; i < len(s) && j < len(out); i++ {
			if s[i] == out[j] {
				j++
			}
		}
		if j != len(out) {
			t.Fatalf("%q is not a subsequence of %q", out, s)
		}
		// ... that keeps every byte no colour code could have swallowed.
		kept := func(c byte) bool {
			return !isFormatting[c] && c != ',' && !isDigit(c) && (c|0x20 < 'a' || c|0x20 > 'f')
		}
		var want, have []byte
		for i := 0; i < len(s); i++ {
			if kept(s[i]) {
				want = append(want, s[i])
			}
		}
		for i := 0; i < len(out); i++ {
			if kept(out[i]) {
				have = append(have, out[i])
			}
		}
		if string(want) != string(have) {
			t.Fatalf("StripFormatting(%q) = %q lost text", s, out)
		}
		if utf8.ValidString(s) && !utf8.ValidString(out) {
			t.Fatalf("valid UTF-8 %q became invalid %q", s, out)
		}
	})
}
