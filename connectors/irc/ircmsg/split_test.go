package ircmsg

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// For the tables: with no prefix and target "#c", a chunk may take
// maxLine-16 bytes (":" " PRIVMSG " "#c" " :" CRLF).
const tableOverhead = 16

func TestSplitText(t *testing.T) {
	smile := "\U0001F600" // 4 bytes
	for _, tc := range []struct {
		name   string
		text   string
		budget int
		want   []string
	}{
		{"fits", "hello world", 20, []string{"hello world"}},
		{"fits exactly", "hello world", 11, []string{"hello world"}},
		{"word break", "hello world", 8, []string{"hello", "world"}},
		{"blank right after the budget", "abcd efgh", 4, []string{"abcd", "efgh"}},
		{"last blank that fits", "aaa bbb ccc", 8, []string{"aaa bbb", "ccc"}},
		{"blank run dropped at the break", "a     b", 4, []string{"a", "b"}},
		{"tab is a break", "ab\tcd", 4, []string{"ab", "cd"}},
		{"blanks inside a chunk kept", "a  b  cccc", 5, []string{"a  b", "cccc"}},
		{"long word", "abcdefghij", 4, []string{"abcd", "efgh", "ij"}},
		{"short word then long word", "a verylongword", 5, []string{"a", "veryl", "ongwo", "rd"}},
		{"newlines", "one\ntwo\r\nthree\rfour", 50, []string{"one", "two", "three", "four"}},
		{"empty and blank lines dropped", "a\n\n \t \r\n\r\nb\n", 50, []string{"a", "b"}},
		{"indentation kept", "code:\n    x := 1", 50, []string{"code:", "    x := 1"}},
		{"leading blanks of a split line", "   aaaa bbbb", 8, []string{"   aaaa", "bbbb"}},
		{"leading blanks then a long word", "  abcdefgh", 4, []string{"abcd", "efgh"}},
		{"trailing blanks of a fitting line kept", "a  ", 5, []string{"a  "}},
		{"NUL removed", "a\x00b", 5, []string{"ab"}},
		{"nothing", "", 50, nil},
		{"only line breaks and blanks", "\r\n \n\t", 50, nil},
		{"only NUL", "\x00", 50, nil},
		{"emoji at the boundary", smile + smile + smile, 6, []string{smile, smile, smile}},
		{"emoji pairs", smile + smile + smile, 8, []string{smile + smile, smile}},
		{"emoji after ASCII", "ab" + smile + "cd", 4, []string{"ab", smile, "cd"}},
		{"CJK", "日本語テキスト", 7, []string{"日本", "語テ", "キス", "ト"}},
		{"CJK with spaces", "日本 語テキ", 7, []string{"日本", "語テ", "キ"}},
		{"two-byte at the boundary", "aéé", 4, []string{"aé", "é"}},
		{"invalid UTF-8 still progresses", "\xff\xff\xff\xff\xff", 4, []string{"\xff\xff\xff\xff", "\xff"}},
		{"truncated sequence counts bytewise", "\xf0\x9f\x98abc", 4, []string{"\xf0\x9f\x98a", "bc"}},
		{"no room for a 4-byte character", "abc", 3, nil},
		{"action wrapped", Action("waves at everyone"), 9 + 8,
			[]string{"\x01ACTION waves at\x01", "\x01ACTION everyone\x01"}},
		{"action lines", Action("one\ntwo"), 50, []string{"\x01ACTION one\x01", "\x01ACTION two\x01"}},
		{"action without closing \\x01", "\x01ACTION waves", 50, []string{"\x01ACTION waves\x01"}},
		{"empty action", Action(""), 50, []string{"\x01ACTION\x01"}},
		{"bare CTCP", "\x01VERSION\x01", 50, []string{"\x01VERSION\x01"}},
		{"action with no room", Action("x"), 9 + 3, nil},
		{"not a CTCP: inner \\x01", "\x01ACTION a\x01 b", 9, []string{"\x01ACTION", "a\x01 b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			maxLine := tc.budget + tableOverhead
			got := SplitText(0, "#c", tc.text, maxLine)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("SplitText(%q, budget %d)\n got %q\nwant %q", tc.text, tc.budget, got, tc.want)
			}
			checkSplit(t, 0, "#c", tc.text, maxLine, got)
		})
	}
}

// TestSplitTextRealistic splits long messages for a real prefix and the
// real limit, checking every line as the server would relay it.
func TestSplitTextRealistic(t *testing.T) {
	prefix := "WhatsAppBridgeUser!~phonebrid@user/phonebridge/x-0123456789abcdef.example.org"
	target := "#phonebridge-family-chat"
	var words []string
	for i := 0; i < 400; i++ {
		switch i % 5 {
		case 0:
			words = append(words, "word")
		case 1:
			words = append(words, "日本語のテキスト")
		case 2:
			words = append(words, "\U0001F468\u200D\U0001F469\u200D\U0001F467") // ZWJ family
		case 3:
			words = append(words, strings.Repeat("ü", 7))
		case 4:
			words = append(words, "naïve")
		}
	}
	for _, text := range []string{
		strings.Join(words, " "),
		strings.Join(words, "  \t "),
		strings.Repeat("x", 3000),
		strings.Repeat("\U0001F600", 700),
		strings.Repeat("漢", 1000),
		Action(strings.Join(words, " ")),
		Action(strings.Repeat("\U0001F600", 300)),
	} {
		for _, maxLine := range []int{0, MaxLineLen, 300} {
			got := SplitText(len(prefix), target, text, maxLine)
			if len(got) < 2 {
				t.Fatalf("%d bytes split into %d chunks", len(text), len(got))
			}
			checkSplit(t, len(prefix), target, text, maxLine, got)
			limit := maxLine
			if limit <= 0 {
				limit = MaxLineLen
			}
			// Chunks are packed: all but the last of a line come within one
			// word (at most 25 bytes here) or one character of the limit.
			for _, c := range got[:len(got)-1] {
				if n := len(relayed(prefix, target, c)); n < limit-25 {
					t.Errorf("loose chunk: line of %d bytes for limit %d: %q", n, limit, c)
				}
			}
		}
	}
}

func relayed(prefix, target, chunk string) string {
	return ":" + prefix + " PRIVMSG " + target + " :" + chunk + "\r\n"
}

// checkSplit asserts what SplitText promises about got, the result of
// SplitText(prefixLen, target, text, maxLine). It is shared with the fuzz
// target, so it checks properties, not exact chunks.
func checkSplit(t *testing.T, prefixLen int, target, text string, maxLine int, got []string) {
	t.Helper()
	limit := maxLine
	if limit <= 0 {
		limit = MaxLineLen
	}
	prefix := strings.Repeat("p", max(prefixLen, 0))
	for _, c := range got {
		if c == "" {
			t.Fatalf("empty chunk in %q", got)
		}
		if strings.ContainsAny(c, "\r\n\x00") {
			t.Fatalf("chunk holds CR, LF or NUL: %q", c)
		}
		if n := len(relayed(prefix, target, c)); n > limit {
			t.Fatalf("line of %d bytes, limit %d: chunk %q", n, limit, c)
		}
		if utf8.ValidString(text) && !utf8.ValidString(c) {
			t.Fatalf("valid UTF-8 in, invalid chunk out: %q", c)
		}
		// When the target is a valid parameter, the line is one valid
		// message carrying the chunk unchanged.
		if target != "" && !strings.ContainsAny(target, " \r\n\x00") && target[0] != ':' {
			m := Message{Command: "PRIVMSG", Params: []string{target, c}}
			line, err := m.Marshal()
			if err != nil {
				t.Fatalf("chunk %q does not make a valid message: %v", c, err)
			}
			back, err := Parse(line)
			if err != nil || back.Trailing() != c {
				t.Fatalf("chunk %q does not survive the wire: %v", c, err)
			}
		}
	}

	budget := limit - tableOverhead + len("#c") - max(prefixLen, 0) - len(target)
	body, inner := text, got
	if cmd, args, ok := ParseCTCP(text); ok {
		open := "\x01" + cmd + " "
		body, budget, inner = args, budget-len(open)-1, nil
		for _, c := range got {
			if c == "\x01"+cmd+"\x01" && len(got) == 1 && !hasContent(args) {
				return // a bare CTCP, sent whole
			}
			if !strings.HasPrefix(c, open) || !strings.HasSuffix(c, "\x01") || len(c) < len(open)+1 {
				t.Fatalf("CTCP chunk %q is not wrapped in %q", c, open)
			}
			inner = append(inner, c[len(open):len(c)-1])
		}
		if len(got) == 0 && !hasContent(args) && len(cmd)+2 <= budget+len(open)+1 {
			t.Fatalf("bare CTCP %q that fits was dropped", text)
		}
	}
	if len(inner) == 0 {
		if hasContent(body) && budget >= utf8.UTFMax {
			t.Fatalf("text %q with room for it (budget %d) gave no chunks", text, budget)
		}
		return
	}

	// The chunks are consecutive pieces of the text, separated only by
	// blanks and line breaks, with nothing but those left over.
	src := strings.ReplaceAll(body, "\x00", "")
	pos := 0
	for i, c := range inner {
		if trimLeftBlanks(c) == "" {
			t.Fatalf("blank chunk %q", c)
		}
		for pos < len(src) && strings.IndexByte(" \t\r\n", src[pos]) >= 0 {
			pos++
		}
		piece := trimLeftBlanks(c)
		if !strings.HasPrefix(src[pos:], piece) {
			t.Fatalf("chunk %d %q is not the next piece of the text at %d: %q", i, c, pos, clip(src[pos:]))
		}
		// No grapheme cluster is cut, at either end of the chunk, unless
		// the cluster alone is longer than a whole message. (A chunk
		// that keeps its line's indentation starts at a line start.)
		start := pos
		pos += len(piece)
		for _, at := range []int{start, pos} {
			if at == start && len(piece) != len(c) {
				continue
			}
			if !graphemeBoundary(src, at) && clusterEnd(src, at)-clusterStart(src, at) <= budget {
				t.Fatalf("chunk %d %q cuts a grapheme cluster at %d: %q|%q", i, c, at, clip(src[clusterStart(src, at):at]), clip(src[at:clusterEnd(src, at)]))
			}
		}
		// A cut inside a word only happens when the chunk is one word that
		// fills the budget: it had no blank to cut at, and the next
		// cluster did not fit.
		if pos < len(src) && strings.IndexByte(" \t\r\n", src[pos]) < 0 && pos > 0 &&
			strings.IndexByte(" \t\r\n", src[pos-1]) < 0 {
			next := clusterEnd(src, pos) - pos
			if !graphemeBoundary(src, pos) {
				next = utf8.RuneLen(firstRune(src[pos:]))
			}
			if usableBlank(src, start, pos) || len(c)+next <= budget {
				t.Fatalf("chunk %q cut a word though it had a blank or room (budget %d)", c, budget)
			}
		}
	}
	if rest := src[pos:]; hasContent(rest) {
		t.Fatalf("text lost after the last chunk: %q", clip(rest))
	}
}

// clusterStart and clusterEnd are the boundaries around byte at of s.
func clusterStart(s string, at int) int {
	for at > 0 && !graphemeBoundary(s, at) {
		_, n := utf8.DecodeLastRuneInString(s[:at])
		at -= n
	}
	return at
}

func clusterEnd(s string, at int) int {
	for at < len(s) {
		_, n := utf8.DecodeRuneInString(s[at:])
		at += n
		if graphemeBoundary(s, at) {
			break
		}
	}
	return at
}

func firstRune(s string) rune {
	r, n := utf8.DecodeRuneInString(s)
	if r == utf8.RuneError && n <= 1 {
		return 'x' // an invalid byte: one byte
	}
	return r
}

// usableBlank reports whether s[from:to] holds, after its first byte, a
// run of blanks a chunk could end at: one not followed by a mark that
// attaches to the blank.
func usableBlank(s string, from, to int) bool {
	for i := from + 1; i < to; i++ {
		if s[i] == ' ' || s[i] == '\t' {
			j := i
			for j < len(s) && (s[j] == ' ' || s[j] == '\t') {
				j++
			}
			if graphemeBoundary(s, j) {
				return true
			}
		}
	}
	return false
}

func hasContent(s string) bool { return strings.Trim(s, " \t\r\n\x00") != "" }

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

func TestSplitTextPrefixAndTarget(t *testing.T) {
	text := strings.Repeat("a", 1000)
	for _, tc := range []struct {
		prefixLen int
		target    string
		chunk     int // length of each full chunk
	}{
		{0, "#c", 512 - 16},
		{-5, "#c", 512 - 16}, // a negative prefix counts as none
		{50, "#c", 512 - 16 - 50},
		{50, "#a-much-longer-channel", 512 - 14 - 50 - 22},
		{400, "#c", 512 - 16 - 400},
	} {
		got := SplitText(tc.prefixLen, tc.target, text, 0)
		if len(got[0]) != tc.chunk {
			t.Errorf("prefix %d, target %q: chunk of %d bytes, want %d", tc.prefixLen, tc.target, len(got[0]), tc.chunk)
		}
		checkSplit(t, tc.prefixLen, tc.target, text, 0, got)
	}
	if got := SplitText(512, "#c", "hi", 0); got != nil {
		t.Errorf("no room at all: %q", got)
	}
}

func TestAction(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"waves", "\x01ACTION waves\x01"},
		{"", "\x01ACTION\x01"},
		{"a\x01b", "\x01ACTION ab\x01"},
		{" spaced ", "\x01ACTION  spaced \x01"},
	} {
		got := Action(tc.text)
		if got != tc.want {
			t.Errorf("Action(%q) = %q, want %q", tc.text, got, tc.want)
		}
		cmd, args, ok := ParseCTCP(got)
		if !ok || cmd != "ACTION" || args != strings.ReplaceAll(tc.text, "\x01", "") {
			t.Errorf("ParseCTCP(Action(%q)) = %q, %q, %v", tc.text, cmd, args, ok)
		}
	}
}

func TestParseCTCP(t *testing.T) {
	for _, tc := range []struct {
		text, cmd, args string
		ok              bool
	}{
		{"\x01ACTION waves\x01", "ACTION", "waves", true},
		{"\x01ACTION waves", "ACTION", "waves", true},
		{"\x01VERSION\x01", "VERSION", "", true},
		{"\x01PING 12345 678\x01", "PING", "12345 678", true},
		{"\x01action  two spaces\x01", "action", " two spaces", true},
		{"\x01V", "V", "", true},
		{"plain text", "", "", false},
		{"", "", "", false},
		{"\x01", "", "", false},
		{"\x01\x01", "", "", false},
		{"\x01 waves\x01", "", "", false},
		{"\x01ACTION a\x01b\x01", "", "", false},
		{"\x01ACTION a\x01\x01", "", "", false},
		{"\x01AC\nTION x\x01", "", "", false},
		{"\x01AC\x00 x\x01", "", "", false},
		{"x\x01ACTION y\x01", "", "", false},
	} {
		cmd, args, ok := ParseCTCP(tc.text)
		if cmd != tc.cmd || args != tc.args || ok != tc.ok {
			t.Errorf("ParseCTCP(%q) = %q, %q, %v; want %q, %q, %v", tc.text, cmd, args, ok, tc.cmd, tc.args, tc.ok)
		}
	}
}

func ExampleSplitText() {
	prefix := "ann!ann@host.example"
	// A tiny line limit, to show the splitting.
	for _, chunk := range SplitText(len(prefix), "#c", Action("waves at everyone\nand smiles"), 55) {
		fmt.Printf("%q\n", chunk)
	}
	// Output:
	// "\x01ACTION waves at\x01"
	// "\x01ACTION everyone\x01"
	// "\x01ACTION and smiles\x01"
}

func TestGraphemeBoundary(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		clusters   []string
	}{
		{"ascii", "ab", []string{"a", "b"}},
		{"combining marks", "e\u0301\u0308x", []string{"e\u0301\u0308", "x"}},
		{"spacing mark", "\u0915\u093f", []string{"\u0915\u093f"}},
		{"variation selector", "\u2764\ufe0f!", []string{"\u2764\ufe0f", "!"}},
		{"skin tone", "\U0001f44d\U0001f3fd\U0001f44d", []string{"\U0001f44d\U0001f3fd", "\U0001f44d"}},
		{"ZWJ family", "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466a", []string{"\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466", "a"}},
		{"ZWJ with skin tone", "\U0001f469\U0001f3fe\u200d\U0001f4bb", []string{"\U0001f469\U0001f3fe\u200d\U0001f4bb"}},
		{"flags", "\U0001f1eb\U0001f1f7\U0001f1e9\U0001f1ea\U0001f1ee", []string{"\U0001f1eb\U0001f1f7", "\U0001f1e9\U0001f1ea", "\U0001f1ee"}},
		{"subdivision flag", "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007fx", []string{"\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f", "x"}},
		{"keycap", "1\ufe0f\u20e3", []string{"1\ufe0f\u20e3"}},
		{"nothing attaches to a control", "\x02\u0301", []string{"\x02", "\u0301"}},
		{"a zero-width name", "A\u200dnn", []string{"A\u200d", "n", "n"}},
	} {
		var got []string
		last := 0
		for i := 1; i <= len(tc.text); i++ {
			if i < len(tc.text) && !utf8.RuneStart(tc.text[i]) {
				continue
			}
			if graphemeBoundary(tc.text, i) {
				got = append(got, tc.text[last:i])
				last = i
			}
		}
		if !slices.Equal(got, tc.clusters) {
			t.Errorf("%s: clusters %q, want %q", tc.name, got, tc.clusters)
		}
	}
}

// TestSplitKeepsEmojiWhole: a message of emoji sequences longer than a
// line is cut between sequences, never inside one.
func TestSplitKeepsEmojiWhole(t *testing.T) {
	for _, seq := range []string{
		"\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466", // family
		"\U0001f44b\U0001f3fd", // waving hand, medium skin tone
		"\U0001f1e7\U0001f1f7", // flag
		"\u2764\ufe0f",         // red heart
		"e\u0301",              // e with a combining acute
	} {
		text := strings.Repeat(seq, 200)
		got := SplitText(0, "#c", text, 100)
		if len(got) < 2 {
			t.Fatalf("%q×200 in %d chunks", seq, len(got))
		}
		for _, c := range got {
			if strings.Repeat(seq, len(c)/len(seq)) != c {
				t.Errorf("a chunk of %q×200 cuts a sequence: %q", seq, c)
			}
		}
		checkSplit(t, 0, "#c", text, 100, got)
	}
}
