package irc

import (
	"strings"
	"testing"
	"unicode/utf8"

	nethtml "golang.org/x/net/html"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/connectors/irc/ircmsg"
)

// htmlSeeds are message bodies as the other platforms send them, and
// markup built to stretch the converter: deep nesting, odd lists, links
// inside links, broken tags.
var htmlSeeds = []string{
	"<b>bold</b> <i>it</i> <s>gone</s> <u>under</u> <code>x := 1</code>",
	"<p>one</p><p>two<br>three</p>",
	"<pre><code>func main() {\n\tprintln(1)\n}</code></pre>",
	"<blockquote><blockquote>deep</blockquote>quote</blockquote>after",
	`<ol start="9"><li>nine</li><li>ten<ul><li>dot</li></ul></li></ol>`,
	`<a href="https://example.org">https://example.org</a> <a href="mailto:a@b.c">mail</a> <a href="javascript:x()">js</a><a href="https://x.org/"></a>`,
	`<a href="https://a"><a href="https://b">nested</a></a>`,
	"<b><i>unclosed", "</b></i></pre></ol></a>", "<ol start=-9223372036854775808><li>x",
	"\x02raw\x03\x0304,05codes\x0f\x01CTCP\x01\x00nul\r\nbreak",
	"&lt;b&gt; &amp;amp; &#0; &#x110000; &nbsp;",
	strings.Repeat("<ul>", 100) + strings.Repeat("<li>x", 100),
	strings.Repeat("<blockquote>", 200) + strings.Repeat("x<br>", 200),
	strings.Repeat(`<a href="h">`, 100) + strings.Repeat("text ", 100) + strings.Repeat("</a>", 100),
	"\xff\xfe<b>\xc3</b>",
}

// FuzzHTMLToIRC feeds arbitrary HTML, as any platform's users can write
// it, to the converter to mIRC codes. It must never panic; what it writes
// holds no CR, NUL, \x01 (a CTCP) or codes other than the toggles it
// adds; valid UTF-8 stays valid; and the text grows at most by a bounded
// factor, whatever the nesting.
func FuzzHTMLToIRC(f *testing.F) {
	for _, s := range htmlSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		out := htmlToIRC(src)
		checkIRCText(t, src, out)
		if max := 16*len(src) + 64; len(out) > max {
			t.Fatalf("%d bytes of HTML became %d bytes of IRC text", len(src), len(out))
		}
	})
}

// checkIRCText checks text headed for an IRC line: breaks only as LF
// (SplitText cuts there), and only the formatting htmlToIRC adds.
func checkIRCText(t *testing.T, in, out string) {
	t.Helper()
	for i := 0; i < len(out); i++ {
		switch c := out[i]; c {
		case '\r', 0, '\x01', codeColour, codeReset, '\x04', '\x16':
			t.Fatalf("%q wrote byte %#x at %d: %q", in, c, i, out)
		}
	}
	if utf8.ValidString(in) && !utf8.ValidString(out) {
		t.Fatalf("valid UTF-8 %q became invalid %q", in, out)
	}
}

// FuzzIRCToHTML feeds arbitrary IRC text, as any IRC user can send it, to
// the converter to HTML. It must never panic; what it writes must use only
// b, i, s, u, code and br, every tag closed in order, and hold the text
// with its codes stripped and nothing else.
func FuzzIRCToHTML(f *testing.F) {
	for _, s := range []string{
		"plain", "\x02bold\x02 \x1ditalic\x1d \x1fu\x1f \x1es\x1e \x11mono\x11",
		"\x02\x1dboth\x02 italic only\x0f plain", "\x02a\x1db\x02c\x1d",
		"\x0304red\x03 \x0304,05on\x03 \x04ff0000hex\x04 \x16rev\x16 \x03,5 x",
		"<script>&amp;\"'</script>", "\x02", "\x0f\x0f", "a\nb\x02c\nd",
		"\xff\x02\xfe", "\x03\x02" + "12",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out, ok := ircToHTML(s)
		if !ok {
			if out != "" {
				t.Fatalf("%q: not formatted, yet HTML %q", s, out)
			}
			return
		}
		if utf8.ValidString(s) && !utf8.ValidString(out) {
			t.Fatalf("valid UTF-8 %q became invalid %q", s, out)
		}
		var text strings.Builder
		var open []string
		z := nethtml.NewTokenizer(strings.NewReader(out))
		for tt := z.Next(); tt != nethtml.ErrorToken; tt = z.Next() {
			tok := z.Token()
			switch tt {
			case nethtml.TextToken:
				text.WriteString(tok.Data)
			case nethtml.StartTagToken:
				switch tok.Data {
				case "b", "i", "s", "u", "code":
					open = append(open, tok.Data)
				case "br":
					text.WriteByte('\n')
				default:
					t.Fatalf("%q: tag <%s> in %q", s, tok.Data, out)
				}
			case nethtml.EndTagToken:
				if n := len(open); n == 0 || open[n-1] != tok.Data {
					t.Fatalf("%q: </%s> closes %v in %q", s, tok.Data, open, out)
				}
				open = open[:len(open)-1]
			default:
				t.Fatalf("%q: token %v in %q", s, tt, out)
			}
		}
		if len(open) > 0 {
			t.Fatalf("%q: %v left open in %q", s, open, out)
		}
		// The tokenizer reads CR and NUL its own way; an IRC line has neither.
		if !strings.ContainsAny(s, "\r\x00") && utf8.ValidString(s) {
			if want := ircmsg.StripFormatting(s); text.String() != want {
				t.Fatalf("%q: text %q, want %q (HTML %q)", s, text.String(), want, out)
			}
		}
	})
}

// FuzzRenderLines renders an outgoing message through a sender_format, as
// a relay to IRC does, from arbitrary text or HTML, sender names, formats,
// targets and prefix lengths. Each line must be valid and, sent with the
// prefix others see, fit in 512 bytes; none may hold CR, LF or NUL, or a
// \x01 outside the ACTION wrapping; valid UTF-8 stays valid.
func FuzzRenderLines(f *testing.F) {
	f.Add("hello there", "", "Ann", DefaultSenderFormat, "#chan", uint16(40), uint8(0), uint8(0))
	f.Add("", "<b>bold</b> and <a href=\"https://x.org\">a link</a>", "Ann Example", "{name}: {text}", "#c", uint16(60), uint8(0b11), uint8(3))
	f.Add(strings.Repeat("long words ", 200), "", "Bob", "[{name}] {text} ", "#a-long-channel-name", uint16(120), uint8(0b100), uint8(0))
	f.Add("waves", "", "Élodie", DefaultSenderFormat, "#c", uint16(30), uint8(0b1011), uint8(0))
	f.Add("Ann reacted 👍 to “hi”", "", "Ann", DefaultSenderFormat, "#c", uint16(30), uint8(0b10000), uint8(0))
	f.Add("1 apple", "", "Ann", "{name}{text}", "nick", uint16(30), uint8(0b10), uint8(0))
	f.Add(strings.Repeat("ü", 600), "", strings.Repeat("N", 600), "{name} {text}", "#c", uint16(300), uint8(0b11), uint8(2))
	f.Add("x", "", "Ann", "{text}", "#"+strings.Repeat("c", 450), uint16(50), uint8(0), uint8(0))
	f.Add("\x01ACTION evil\x01\r\nQUIT :bye\x00", "", "\x02Eve\r\n", "<{name}> {text}", "#c", uint16(30), uint8(0b100000), uint8(1))
	f.Add("", strings.Repeat("<b>bold ", 100), "Ann", DefaultSenderFormat, "#c", uint16(30), uint8(0), uint8(0))
	f.Add("x", "", "Ann", "{nick} {text}", "#c", uint16(30), uint8(0), uint8(0))
	f.Fuzz(func(t *testing.T, text, htmlBody, name, format, chat string, prefixLen uint16, flags, maxLines uint8) {
		tpl, err := parseTemplate(format)
		if err != nil {
			if msg := err.Error(); strings.ContainsAny(msg, "\r\n\x00") {
				t.Fatalf("sender_format %q refused with %q", format, msg)
			}
			tpl = mustTemplate(t, DefaultSenderFormat)
		}
		// The target is a channel or nick the server accepted: one word.
		if chat == "" || chat[0] == ':' || strings.ContainsAny(chat, " \r\n\x00") {
			chat = "#c"
		}
		prefix := "n!u@" + strings.Repeat("h", int(prefixLen%300))
		r := renderer{format: tpl, zeroWidth: flags&1 != 0, colours: flags&2 != 0, maxLines: int(maxLines % 8)}
		out := &bridge.Outgoing{Key: "k", Event: bridge.Event{
			Kind:   bridge.KindMessage,
			Chat:   bridge.ChatRef{Connector: "irc", ID: chat},
			Sender: bridge.Sender{ID: "id", Name: name},
			Text:   text,
			HTML:   htmlBody,
			Emote:  flags&4 != 0,
			Notice: flags&16 != 0,
			Origin: bridge.ChatRef{Connector: "phone", ID: "1@s.whatsapp.net"},
		}}
		if flags&32 != 0 {
			out.Origin.Connector = bridge.NoticeOrigin
		}
		var media []string
		if flags&64 != 0 {
			media = []string{"[image: cat.jpg] https://media.example.org/Zm9vYmFy/cat.jpg"}
		}
		kind, lines := r.lines(out, lineOpts{
			prefixLen: len(prefix),
			media:     media,
			full:      func(string) string { return "https://media.example.org/dGV4dA/message.txt" },
			asSender:  flags&8 != 0,
		})
		cmd := "PRIVMSG"
		if kind == lineNotice {
			cmd = "NOTICE"
		}
		valid := utf8.ValidString(text) && utf8.ValidString(htmlBody) && utf8.ValidString(name) && utf8.ValidString(format)
		for _, l := range lines {
			body := l
			if kind == lineAction {
				inner, ok := strings.CutPrefix(l, "\x01ACTION ")
				if inner, ok = strings.CutSuffix(inner, "\x01"); !ok {
					t.Fatalf("action line %q is not \\x01ACTION ...\\x01", l)
				}
				body = inner
			}
			if strings.ContainsAny(body, "\r\n\x00\x01") {
				t.Fatalf("line holds CR, LF, NUL or \\x01: %q", l)
			}
			m := &ircmsg.Message{Source: prefix, Command: cmd, Params: []string{chat, l}}
			if err := m.Validate(); err != nil {
				t.Fatalf("line %q is not a valid message: %v", l, err)
			}
			if n := len(m.String()) + len("\r\n"); n > ircmsg.MaxLineLen {
				t.Fatalf("line of %d bytes with the prefix: %q", n, m.String())
			}
			if valid && !utf8.ValidString(l) {
				t.Fatalf("invalid UTF-8 from valid input: %q", l)
			}
		}
		if n := int(maxLines % 8); n > 0 && len(lines) > n+1 {
			t.Fatalf("max_lines %d gave %d lines", n, len(lines))
		}
	})
}
