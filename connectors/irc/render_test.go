package irc

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/connectors/irc/ircmsg"
)

func TestTemplateRendering(t *testing.T) {
	for _, tc := range []struct {
		format, name, text, want string
	}{
		{"<{name}> {text}", "Ann", "hi", "<Ann> hi"},
		{"{text} — {name}", "Ann", "hi", "hi — Ann"},
		{"[{name}|{name}] {text}", "Ann", "hi", "[Ann|Ann] hi"},
		{"{name}: {text} {x", "Ann", "hi", "Ann: hi {x"},
		// A coloured name ends in a bare \x03: a digit after it would be
		// read as a colour, so an empty bold toggle separates them.
		{"{name}{text}", "\x0304Ann\x03", "1 apple", "\x0304Ann\x03\x02\x021 apple"},
		{"{name}, {text}", "\x0304Ann\x03", "hi", "\x0304Ann\x03\x02\x02, hi"},
		{"{name}: {text}", "\x0304Ann\x03", "1", "\x0304Ann\x03: 1"},
	} {
		tpl, err := parseTemplate(tc.format)
		if err != nil {
			t.Fatalf("%q: %v", tc.format, err)
		}
		if got := string(tpl.render(nil, tc.name, tc.text)); got != tc.want {
			t.Errorf("%q with %q, %q = %q, want %q", tc.format, tc.name, tc.text, got, tc.want)
		}
	}
	for _, bad := range []string{"{name}", "{text} {text}", "<{nick}> {text}", "{text}\n", "\x01{text}"} {
		if _, err := parseTemplate(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestNamesZeroWidthAndColour(t *testing.T) {
	if got := decorateName("Ann", true, false); got != "A\u200dnn" {
		t.Errorf("ZWJ: %q", got)
	}
	if got := decorateName("Élodie", true, false); got != "É\u200dlodie" {
		t.Errorf("ZWJ after a multi-byte first letter: %q", got)
	}
	if got := decorateName("A", true, false); got != "A" {
		t.Errorf("one letter: %q", got)
	}
	if got := decorateName("Ann", false, false); got != "Ann" {
		t.Errorf("plain: %q", got)
	}
	col := decorateName("Ann", false, true)
	if col != decorateName("Ann", false, true) || !strings.HasPrefix(col, "\x03") || !strings.HasSuffix(col, "Ann\x03") || len(col) != len("\x0300Ann\x03") {
		t.Errorf("colour: %q", col)
	}
	// Different names spread over the palette, every one of them readable.
	seen := map[int]bool{}
	for _, n := range []string{"Ann", "Bob", "Carol", "Dave", "Eve", "Frank", "Grace", "Heidi", "Ivan", "Judy"} {
		c := nickColour(n)
		if c == 0 || c == 1 || c == 8 || c > 13 {
			t.Errorf("%s got colour %d, hard to read", n, c)
		}
		seen[c] = true
	}
	if len(seen) < 4 {
		t.Errorf("ten names share %d colours", len(seen))
	}
	if got := cleanName(bridge.Sender{Name: "\x02Evil\x02\x01 \n Name\r"}); got != "Evil Name" {
		t.Errorf("a name with codes and breaks: %q", got)
	}
	if got := cleanName(bridge.Sender{ID: "15551234567"}); got != "15551234567" {
		t.Errorf("no name: %q", got)
	}
}

func TestHTMLToIRC(t *testing.T) {
	for _, tc := range []struct{ html, want string }{
		{"plain", "plain"},
		{"<b>bold</b> and <strong>strong</strong>", "\x02bold\x02 and \x02strong\x02"},
		{"<i>it</i> <em>em</em>", "\x1dit\x1d \x1dem\x1d"},
		{"<s>gone</s><del>x</del>", "\x1egone\x1e\x1ex\x1e"},
		{"<u>under</u>", "\x1funder\x1f"},
		{"say <code>ls -l</code>", "say \x11ls -l\x11"},
		{"<pre>a\n  b</pre>after", "\x11a\n  b\x11\nafter"},
		{"one<br>two<br/>three", "one\ntwo\nthree"},
		{"<p>para one</p><p>para two</p>", "para one\npara two"},
		{"<blockquote><b>Ann</b>: hi</blockquote>reply", "> \x02Ann\x02: hi\nreply"},
		{"<ul><li>a</li><li>b</li></ul>", "• a\n• b"},
		{"<ol start=\"3\"><li>c</li><li>d</li></ol>", "3. c\n4. d"},
		{"<a href=\"https://x.org/p\">page</a>", "page (https://x.org/p)"},
		{"<a href=\"https://x.org/p\">https://x.org/p</a>", "https://x.org/p"},
		{"<a href=\"mailto:a@b.org\">a@b.org</a>", "a@b.org"},
		{"<a href=\"https://x.org\"></a>", "https://x.org"},
		{"&lt;tag&gt; &amp; &quot;", "<tag> & \""},
		{"a\n  b", "a b"},
		{"<span>unknown</span> <font color=red>tags</font>", "unknown tags"},
		{"evil\x03 4colour\x01CTCP", "evil 4colourCTCP"},
	} {
		if got := htmlToIRC(tc.html); got != tc.want {
			t.Errorf("htmlToIRC(%q) = %q, want %q", tc.html, got, tc.want)
		}
	}
}

func TestIRCToHTML(t *testing.T) {
	for _, tc := range []struct {
		irc, want string
		ok        bool
	}{
		{"plain <text>", "", false},
		{"\x0304red\x03 only", "", false},
		{"\x02bold\x02 text", "<b>bold</b> text", true},
		{"\x1ditalic", "<i>italic</i>", true},
		{"\x1estrike\x1e \x1funder\x1f \x11mono\x11", "<s>strike</s> <u>under</u> <code>mono</code>", true},
		{"\x02b \x1dbi\x02 i\x1d", "<b>b <i>bi</i></b><i> i</i>", true},
		{"\x02\x0304,01bold red\x0f plain", "<b>bold red</b> plain", true},
		{"\x02a<b>&", "<b>a&lt;b&gt;&amp;</b>", true},
	} {
		got, ok := ircToHTML(tc.irc)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ircToHTML(%q) = %q, %v; want %q, %v", tc.irc, got, ok, tc.want, tc.ok)
		}
	}
}

// relayed is the line others receive for body, as the server relays it.
func relayed(prefix, target, body string) string {
	return ":" + prefix + " PRIVMSG " + target + " :" + body + "\r\n"
}

func TestLongMessagesSplitUnder512Bytes(t *testing.T) {
	r := renderer{format: mustTemplate(t, DefaultSenderFormat), zeroWidth: true, colours: true}
	prefix := "bridge!~bridge@a-rather-long-cloak.example.org"
	words := make([]string, 400)
	for i := range words {
		words[i] = "wörd" + strings.Repeat("x", i%7)
	}
	text := strings.Join(words, " ")
	out := message("k", "#chan", "Ann", text)
	out.HTML = "<b>" + text + "</b>"
	kind, lines := r.lines(out, lineOpts{prefixLen: len(prefix)})
	if kind != linePrivmsg || len(lines) < 5 {
		t.Fatalf("%d lines of kind %d", len(lines), kind)
	}
	var back []string
	for i, l := range lines {
		if n := len(relayed(prefix, "#chan", l)); n > ircmsg.MaxLineLen {
			t.Errorf("line %d is %d bytes", i, n)
		}
		if !utf8.ValidString(l) {
			t.Errorf("line %d is not UTF-8", i)
		}
		head := "<\x03" + l[2:4] + "A\u200dnn\x03> \x02"
		if !strings.HasPrefix(l, head) {
			t.Errorf("line %d does not start with the coloured name and a reopened bold: %q", i, l[:min(len(l), 20)])
		}
		back = append(back, strings.TrimPrefix(ircmsg.StripFormatting(l), "<A\u200dnn> "))
	}
	if got := strings.Join(back, " "); got != text {
		t.Errorf("the lines do not add up to the text:\n%s\nwant\n%s", got, text)
	}
}

func TestMaxLinesTruncates(t *testing.T) {
	r := renderer{format: mustTemplate(t, DefaultSenderFormat), maxLines: 3}
	_, lines := r.lines(message("k", "#chan", "Ann", "1\n2\n3\n4\n5\n6"), lineOpts{prefixLen: 30})
	want := []string{"<Ann> 1", "<Ann> 2", "<Ann> 3", "<Ann> … (3 more lines)"}
	if strings.Join(lines, "|") != strings.Join(want, "|") {
		t.Errorf("got %q, want %q", lines, want)
	}
	_, lines = r.lines(message("k", "#chan", "Ann", "1\n2\n3\n4"), lineOpts{prefixLen: 30})
	if lines[3] != "<Ann> … (1 more line)" {
		t.Errorf("one more: %q", lines)
	}
	// With the media server, the marker links to the whole text.
	var published string
	_, lines = r.lines(message("k", "#chan", "Ann", "1\n\x02two\x02\n3\n4"), lineOpts{prefixLen: 30, full: func(text string) string {
		published = text
		return "https://media.example.org/abc/message.txt"
	}})
	if lines[3] != "<Ann> … (1 more line: https://media.example.org/abc/message.txt)" || published != "1\ntwo\n3\n4" {
		t.Errorf("with a link: %q, published %q", lines, published)
	}
	r.maxLines = 0
	if _, lines = r.lines(message("k", "#chan", "Ann", strings.Repeat("x\n", 50)), lineOpts{prefixLen: 30}); len(lines) != 50 {
		t.Errorf("unlimited: %d lines", len(lines))
	}
}

func TestKindsOfLines(t *testing.T) {
	r := renderer{format: mustTemplate(t, DefaultSenderFormat), zeroWidth: true}
	emote := message("k", "#chan", "Ann", "waves")
	emote.Emote = true
	if kind, lines := r.lines(emote, lineOpts{prefixLen: 30}); kind != lineAction || len(lines) != 1 || lines[0] != "\x01ACTION A\u200dnn waves\x01" {
		t.Errorf("emote: %d %q", kind, lines)
	}
	// The core's reaction notice already names the sender.
	reaction := message("k", "#chan", "Ann", "Ann reacted 👍 to “hello there”")
	reaction.Notice = true
	if kind, lines := r.lines(reaction, lineOpts{prefixLen: 30}); kind != lineNotice || lines[0] != "A\u200dnn reacted 👍 to “hello there”" {
		t.Errorf("reaction notice: %d %q", kind, lines)
	}
	bot := message("k", "#chan", "Build bot", "build passed")
	bot.Notice = true
	if _, lines := r.lines(bot, lineOpts{prefixLen: 30}); lines[0] != "<B\u200duild bot> build passed" {
		t.Errorf("a bot's notice: %q", lines)
	}
	op := message("k", "#chan", "phonebridge", "link 'phone' was logged out")
	op.Notice, op.Origin = true, bridge.ChatRef{Connector: bridge.NoticeOrigin, ID: "notices"}
	if _, lines := r.lines(op, lineOpts{prefixLen: 30}); lines[0] != "link 'phone' was logged out" {
		t.Errorf("an operator notice: %q", lines)
	}
	// The core's placeholder for media IRC cannot carry.
	media := message("k", "#chan", "Ann", "[image: cat.jpg, 1.2 MB] look")
	if _, lines := r.lines(media, lineOpts{prefixLen: 30}); lines[0] != "<A\u200dnn> [image: cat.jpg, 1.2 MB] look" {
		t.Errorf("media placeholder: %q", lines)
	}
	// Text trying to start a CTCP or smuggle a line.
	evil := message("k", "#chan", "Ann", "\x01DCC SEND x\x01\r\nQUIT :bye")
	if _, lines := r.lines(evil, lineOpts{prefixLen: 30}); len(lines) != 2 || strings.ContainsAny(strings.Join(lines, ""), "\x01\r\n") {
		t.Errorf("CTCP or CRLF got through: %q", lines)
	}
}

func mustTemplate(t *testing.T, f string) template {
	t.Helper()
	tpl, err := parseTemplate(f)
	if err != nil {
		t.Fatal(err)
	}
	return tpl
}
