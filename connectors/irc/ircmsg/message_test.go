package ircmsg

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name string
		line string
		want Message
	}{
		{"no prefix", "PING :irc.example.net",
			Message{Command: "PING", Params: []string{"irc.example.net"}}},
		{"command only", "QUIT", Message{Command: "QUIT"}},
		{"command with CRLF", "QUIT\r\n", Message{Command: "QUIT"}},
		{"LF only", "QUIT\n", Message{Command: "QUIT"}},
		{"several line ends", "QUIT\r\n\r\n", Message{Command: "QUIT"}},
		{"full prefix", ":ann!ann@host.example PRIVMSG #chan :hello there\r\n",
			Message{Source: "ann!ann@host.example", Command: "PRIVMSG", Params: []string{"#chan", "hello there"}}},
		{"server prefix numeric", ":irc.example.net 001 ann :Welcome to IRC ann!ann@host",
			Message{Source: "irc.example.net", Command: "001", Params: []string{"ann", "Welcome to IRC ann!ann@host"}}},
		{"numeric keeps leading zeros", ":srv 005 me CHANTYPES=# NICKLEN=30 :are supported",
			Message{Source: "srv", Command: "005", Params: []string{"me", "CHANTYPES=#", "NICKLEN=30", "are supported"}}},
		{"lower-case command upper-cased", "privmsg #c hi",
			Message{Command: "PRIVMSG", Params: []string{"#c", "hi"}}},
		{"last param without colon", ":n JOIN #chan",
			Message{Source: "n", Command: "JOIN", Params: []string{"#chan"}}},
		{"empty trailing", "TOPIC #chan :",
			Message{Command: "TOPIC", Params: []string{"#chan", ""}}},
		{"trailing of only a colon", "PRIVMSG #c ::",
			Message{Command: "PRIVMSG", Params: []string{"#c", ":"}}},
		{"trailing with colons and spaces", "PRIVMSG #c :a: b :c  ",
			Message{Command: "PRIVMSG", Params: []string{"#c", "a: b :c  "}}},
		{"colon inside a middle param", "MODE #c +k a:b",
			Message{Command: "MODE", Params: []string{"#c", "+k", "a:b"}}},
		{"single trailing param", "AWAY :gone fishing",
			Message{Command: "AWAY", Params: []string{"gone fishing"}}},
		{"single empty trailing", "AWAY :", Message{Command: "AWAY", Params: []string{""}}},
		{"runs of spaces", ":src   PRIVMSG    #c   :  spaced  ",
			Message{Source: "src", Command: "PRIVMSG", Params: []string{"#c", "  spaced  "}}},
		{"trailing spaces after params", "MODE #c +o nick   ",
			Message{Command: "MODE", Params: []string{"#c", "+o", "nick"}}},
		{"leading spaces", "  PING x", Message{Command: "PING", Params: []string{"x"}}},
		{"tab is not a separator", "PRIVMSG a\tb c",
			Message{Command: "PRIVMSG", Params: []string{"a\tb", "c"}}},
		{"tags", "@time=2024-05-01T12:00:00.000Z;msgid=abc;+draft/reply=x :a!b@c PRIVMSG #c :hi",
			Message{
				Tags:    map[string]string{"time": "2024-05-01T12:00:00.000Z", "msgid": "abc", "+draft/reply": "x"},
				Source:  "a!b@c",
				Command: "PRIVMSG", Params: []string{"#c", "hi"},
			}},
		{"tags without values", "@+typing;account= TAGMSG #c",
			Message{Tags: map[string]string{"+typing": "", "account": ""}, Command: "TAGMSG", Params: []string{"#c"}}},
		{"tag value with '='", "@a=b=c PING", Message{Tags: map[string]string{"a": "b=c"}, Command: "PING"}},
		{"repeated tag keeps last", "@a=1;a=2 PING", Message{Tags: map[string]string{"a": "2"}, Command: "PING"}},
		{"empty tag items skipped", "@;a=1;;b; PING", Message{Tags: map[string]string{"a": "1", "b": ""}, Command: "PING"}},
		{"tags section without tags", "@ PING", Message{Command: "PING"}},
		{"spaces after tags", "@a=1   :s PING", Message{Tags: map[string]string{"a": "1"}, Source: "s", Command: "PING"}},
		{"invalid UTF-8 passes through", ":n\xff PRIVMSG #c :\xc3\x28 ok",
			Message{Source: "n\xff", Command: "PRIVMSG", Params: []string{"#c", "\xc3\x28 ok"}}},
		{"colon prefix of a colon source", "::odd PING", Message{Source: ":odd", Command: "PING"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.line)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.line, err)
			}
			if !reflect.DeepEqual(*got, tc.want) {
				t.Fatalf("Parse(%q)\n got %#v\nwant %#v", tc.line, *got, tc.want)
			}
		})
	}
}

func TestParseTagUnescape(t *testing.T) {
	for _, tc := range []struct{ raw, want string }{
		{`plain`, "plain"},
		{`a\:b`, "a;b"},
		{`a\sb`, "a b"},
		{`a\\b`, `a\b`},
		{`\r\n`, "\r\n"},
		{`\\s`, `\s`},
		{`x\`, "x"},            // lone trailing backslash dropped
		{`\`, ""},              // only a lone backslash
		{`\a\b\-`, "ab-"},      // unknown escapes keep the character
		{`\\\`, `\`},           // escaped backslash, then a lone one
		{`é\sü`, "é ü"},        // multi-byte untouched
		{`\:\:\s\\`, `;; \`},   // escapes in a row
		{`a=b`, "a=b"},         // '=' after the first is value
		{`\é`, "é"},            // an escaped multi-byte character is itself
		{`\` + "\xff", "\xff"}, // and so is an escaped invalid byte
	} {
		m, err := Parse("@k=" + tc.raw + " PING")
		if err != nil {
			t.Fatalf("value %q: %v", tc.raw, err)
		}
		if got := m.Tags["k"]; got != tc.want {
			t.Errorf("value %q unescaped to %q, want %q", tc.raw, got, tc.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	long := "PRIVMSG #c :" + strings.Repeat("x", MaxLineLen-2-len("PRIVMSG #c :")+1)
	for _, tc := range []struct {
		name string
		line string
		want error
	}{
		{"empty", "", ErrEmpty},
		{"only CRLF", "\r\n", ErrEmpty},
		{"only spaces", "   ", ErrEmpty},
		{"prefix only", ":nick!u@h", ErrMalformed},
		{"prefix and space", ":nick!u@h   ", ErrMalformed},
		{"empty prefix", ": PING", ErrMalformed},
		{"tags only", "@a=b", ErrMalformed},
		{"tags and space only", "@a=b  ", ErrMalformed},
		{"empty tag key", "@=x PING", ErrMalformed},
		{"empty tag key after others", "@a=1;=x PING", ErrMalformed},
		{"mixed command", "PR1VMSG #c", ErrMalformed},
		{"short numeric", "01 me", ErrMalformed},
		{"long numeric", "0001 me", ErrMalformed},
		{"punctuation command", "!? x", ErrMalformed},
		{"non-ASCII command", "PRÍVMSG #c x", ErrMalformed},
		{"embedded CR", "PRIVMSG #c :hi\rQUIT", ErrMalformed},
		{"embedded LF", "PRIVMSG #c :hi\nQUIT :x", ErrMalformed},
		{"NUL", "PRIVMSG #c :a\x00b", ErrMalformed},
		{"NUL in tags", "@a=\x00 PING", ErrMalformed},
		{"too long", long, ErrTooLong},
		{"too long with CRLF", long + "\r\n", ErrTooLong},
		{"tags too long", "@a=" + strings.Repeat("v", MaxTagsLen-len("@a= ")+1) + " PING", ErrTooLong},
		{"garbage", "\x01\x02\x03", ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Parse(tc.line)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Parse(%q) = %v, %v; want error %v", tc.line, m, err, tc.want)
			}
			if m != nil {
				t.Fatalf("Parse(%q) returned a message with its error", tc.line)
			}
			if strings.ContainsAny(err.Error(), "\r\n") || len(err.Error()) > 80 {
				t.Fatalf("reason is not short and one line: %q", err)
			}
		})
	}
}

// TestParseLimits pins the limits at their exact edges.
func TestParseLimits(t *testing.T) {
	head := "PRIVMSG #c :"
	fits := head + strings.Repeat("x", MaxLineLen-2-len(head)) // 510 bytes, 512 with CRLF
	if len(fits) != 510 {
		t.Fatalf("test setup: %d", len(fits))
	}
	for _, line := range []string{fits, fits + "\r\n", fits + "\n"} {
		if _, err := Parse(line); err != nil {
			t.Errorf("Parse of a line of %d bytes: %v", len(line), err)
		}
	}
	if _, err := Parse(fits + "x"); !errors.Is(err, ErrTooLong) {
		t.Errorf("511 bytes before CRLF: %v, want ErrTooLong", err)
	}

	tags := "@a=" + strings.Repeat("v", MaxTagsLen-len("@a= ")) + " "
	if len(tags) != MaxTagsLen {
		t.Fatalf("test setup: %d", len(tags))
	}
	m, err := Parse(tags + fits)
	if err != nil {
		t.Fatalf("tags of exactly %d bytes and a full line: %v", MaxTagsLen, err)
	}
	if len(m.Tags["a"]) != MaxTagsLen-len("@a= ") || len(m.Trailing()) != 510-len(head) {
		t.Fatalf("a maximal line was truncated")
	}
	if _, err := Parse("@a=v" + tags[3:] + fits); !errors.Is(err, ErrTooLong) {
		t.Errorf("tags of %d bytes: %v, want ErrTooLong", MaxTagsLen+1, err)
	}
	// A huge line is refused quickly and without panicking.
	if _, err := Parse(strings.Repeat("@", 1<<20)); err == nil {
		t.Errorf("a megabyte of '@' parsed")
	}
	if _, err := Parse(strings.Repeat("A", 1<<20)); !errors.Is(err, ErrTooLong) {
		t.Errorf("a megabyte command: %v, want ErrTooLong", err)
	}
}

func TestAccessors(t *testing.T) {
	for _, tc := range []struct{ source, nick string }{
		{"ann!user@host", "ann"},
		{"ann@host", "ann"},
		{"ann", "ann"},
		{"irc.example.net", "irc.example.net"},
		{"", ""},
		{"!u@h", ""},
	} {
		m := Message{Source: tc.source}
		if got := m.Nick(); got != tc.nick {
			t.Errorf("Nick of %q = %q, want %q", tc.source, got, tc.nick)
		}
	}
	m := Message{Command: "PRIVMSG", Params: []string{"#c", "text"}}
	for i, want := range map[int]string{-1: "", 0: "#c", 1: "text", 2: ""} {
		if got := m.Param(i); got != want {
			t.Errorf("Param(%d) = %q, want %q", i, got, want)
		}
	}
	if got := m.Trailing(); got != "text" {
		t.Errorf("Trailing = %q", got)
	}
	if got := (&Message{Command: "QUIT"}).Trailing(); got != "" {
		t.Errorf("Trailing without params = %q", got)
	}
}

func TestMarshal(t *testing.T) {
	for _, tc := range []struct {
		name string
		msg  Message
		want string
	}{
		{"plain", Message{Command: "PRIVMSG", Params: []string{"#c", "hi"}}, "PRIVMSG #c hi"},
		{"lower-case command", Message{Command: "privmsg", Params: []string{"#c", "hi"}}, "PRIVMSG #c hi"},
		{"trailing with space", Message{Command: "PRIVMSG", Params: []string{"#c", "hello there"}}, "PRIVMSG #c :hello there"},
		{"empty trailing", Message{Command: "TOPIC", Params: []string{"#c", ""}}, "TOPIC #c :"},
		{"trailing starting with colon", Message{Command: "PRIVMSG", Params: []string{"#c", ":)"}}, "PRIVMSG #c ::)"},
		{"colon later needs none", Message{Command: "PRIVMSG", Params: []string{"#c", "a:b"}}, "PRIVMSG #c a:b"},
		{"single empty param", Message{Command: "AWAY", Params: []string{""}}, "AWAY :"},
		{"no params", Message{Command: "QUIT"}, "QUIT"},
		{"source", Message{Source: "ann!u@h", Command: "JOIN", Params: []string{"#c"}}, ":ann!u@h JOIN #c"},
		{"numeric", Message{Source: "srv", Command: "001", Params: []string{"me", "Welcome"}}, ":srv 001 me Welcome"},
		{"tags sorted and escaped", Message{
			Tags:    map[string]string{"b": "x y;z\\w\r\n", "a": "", "+c/d": "1"},
			Command: "TAGMSG", Params: []string{"#c"},
		}, `@+c/d=1;a;b=x\sy\:z\\w\r\n TAGMSG #c`},
		{"empty tags map writes no section", Message{Tags: map[string]string{}, Command: "PING", Params: []string{"x"}}, "PING x"},
		{"invalid UTF-8 passes through", Message{Command: "PRIVMSG", Params: []string{"#c", "\xff\xfe"}}, "PRIVMSG #c \xff\xfe"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.msg.Marshal()
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			if got != tc.want {
				t.Fatalf("Marshal = %q, want %q", got, tc.want)
			}
			if s := tc.msg.String(); s != got {
				t.Fatalf("String = %q, Marshal = %q", s, got)
			}
			if b := tc.msg.AppendTo([]byte("x")); string(b) != "x"+got {
				t.Fatalf("AppendTo did not append: %q", b)
			}
			// What we write reads back as what we meant.
			back, err := Parse(got)
			if err != nil {
				t.Fatalf("Parse(%q): %v", got, err)
			}
			if want := normalized(tc.msg); !reflect.DeepEqual(*back, want) {
				t.Fatalf("round trip\n got %#v\nwant %#v", *back, want)
			}
		})
	}
}

// normalized is what Parse gives back for a valid m: the command
// upper-cased, and no tags or params as nil.
func normalized(m Message) Message {
	m.Command = strings.ToUpper(m.Command)
	if len(m.Tags) == 0 {
		m.Tags = nil
	}
	if len(m.Params) == 0 {
		m.Params = nil
	}
	return m
}

func TestValidateRefuses(t *testing.T) {
	with := func(f func(*Message)) Message {
		m := Message{Command: "PRIVMSG", Params: []string{"#c", "hi"}}
		f(&m)
		return m
	}
	for _, tc := range []struct {
		name string
		msg  Message
		want error
	}{
		{"empty command", Message{}, ErrInvalid},
		{"command with space", with(func(m *Message) { m.Command = "PRIVMSG #x" }), ErrInvalid},
		{"command with CRLF", with(func(m *Message) { m.Command = "PRIVMSG\r\nQUIT" }), ErrInvalid},
		{"two-digit numeric", with(func(m *Message) { m.Command = "01" }), ErrInvalid},
		{"CR in trailing", with(func(m *Message) { m.Params[1] = "hi\rQUIT :bye" }), ErrInvalid},
		{"LF in trailing", with(func(m *Message) { m.Params[1] = "hi\nQUIT :bye" }), ErrInvalid},
		{"NUL in trailing", with(func(m *Message) { m.Params[1] = "a\x00b" }), ErrInvalid},
		{"LF in middle", with(func(m *Message) { m.Params[0] = "#c\nQUIT" }), ErrInvalid},
		{"space in middle", with(func(m *Message) { m.Params[0] = "#c QUIT" }), ErrInvalid},
		{"leading colon in middle", with(func(m *Message) { m.Params[0] = ":x" }), ErrInvalid},
		{"empty middle", with(func(m *Message) { m.Params[0] = "" }), ErrInvalid},
		{"space in source", with(func(m *Message) { m.Source = "a QUIT" }), ErrInvalid},
		{"LF in source", with(func(m *Message) { m.Source = "a\nQUIT" }), ErrInvalid},
		{"empty tag key", with(func(m *Message) { m.Tags = map[string]string{"": "x"} }), ErrInvalid},
		{"space in tag key", with(func(m *Message) { m.Tags = map[string]string{"a QUIT": "x"} }), ErrInvalid},
		{"'=' in tag key", with(func(m *Message) { m.Tags = map[string]string{"a=b": ""} }), ErrInvalid},
		{"';' in tag key", with(func(m *Message) { m.Tags = map[string]string{"a;b": ""} }), ErrInvalid},
		{"CR in tag key", with(func(m *Message) { m.Tags = map[string]string{"a\r": ""} }), ErrInvalid},
		{"NUL in tag value", with(func(m *Message) { m.Tags = map[string]string{"a": "\x00"} }), ErrInvalid},
		{"line too long", with(func(m *Message) { m.Params[1] = strings.Repeat("x", 500) }), ErrTooLong},
		{"tags too long", with(func(m *Message) {
			m.Tags = map[string]string{"a": strings.Repeat(";", 4094)} // escapes to 8188 bytes
		}), ErrTooLong},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.msg.Validate()
			if !errors.Is(err, tc.want) {
				t.Fatalf("Validate = %v, want %v", err, tc.want)
			}
			if s, err := tc.msg.Marshal(); err == nil || s != "" {
				t.Fatalf("Marshal = %q, %v; want a refusal", s, err)
			}
			// The unchecked writer still never writes a line break or NUL.
			if s := tc.msg.String(); strings.ContainsAny(s, "\r\n\x00") {
				t.Fatalf("String wrote %q", s)
			}
		})
	}
}

// TestValidateLimits pins Validate's limits at their edges, counting as
// Parse does.
func TestValidateLimits(t *testing.T) {
	head := "PRIVMSG #c :"
	m := Message{Command: "PRIVMSG", Params: []string{"#c", strings.Repeat("x ", (MaxLineLen-2-len(head))/2)}}
	s, err := m.Marshal()
	if err != nil || len(s) != MaxLineLen-2 {
		t.Fatalf("a %d-byte line: %v (len %d)", MaxLineLen-2, err, len(s))
	}
	m.Params[1] += "x"
	if err := m.Validate(); !errors.Is(err, ErrTooLong) {
		t.Fatalf("one byte more: %v", err)
	}
	m.Params[1] = "x" // the source counts: ":" + source + " "
	m.Source = strings.Repeat("s", MaxLineLen-2-len(": PRIVMSG #c x"))
	if s, err := m.Marshal(); err != nil || len(s) != MaxLineLen-2 {
		t.Fatalf("a %d-byte line with source: %v (len %d)", MaxLineLen-2, err, len(s))
	}
	m.Source += "s"
	if err := m.Validate(); !errors.Is(err, ErrTooLong) {
		t.Fatalf("one byte more of source: %v", err)
	}

	// "@a=" + 4093 ';' escaped to two bytes each + "x" + " " = 8191 bytes.
	m = Message{Command: "PING", Tags: map[string]string{"a": strings.Repeat(";", 4093) + "x"}}
	s, err = m.Marshal()
	if err != nil {
		t.Fatalf("tags of %d bytes: %v", MaxTagsLen, err)
	}
	if i := strings.IndexByte(s, ' '); i+1 != MaxTagsLen {
		t.Fatalf("test setup: tags section of %d bytes", i+1)
	}
	m.Tags["a"] += "x"
	if err := m.Validate(); !errors.Is(err, ErrTooLong) {
		t.Fatalf("tags one byte longer: %v", err)
	}
}

// TestAppendToSanitizes checks that even an unvalidated invalid message
// cannot put a line break on the wire.
func TestAppendToSanitizes(t *testing.T) {
	m := Message{
		Tags:    map[string]string{"k\r\n": "v\x00\r\n"},
		Source:  "s\r\n",
		Command: "PRIVMSG\r\nQUIT",
		Params:  []string{"#c\n", "hi\r\nQUIT :bye\x00"},
	}
	got := m.String()
	if strings.ContainsAny(got, "\r\n\x00") {
		t.Fatalf("String wrote a line break or NUL: %q", got)
	}
	want := `@k  =v\s\r\n :s   PRIVMSG  QUIT #c  :hi  QUIT :bye `
	if got != want {
		t.Fatalf("String = %q, want %q", got, want)
	}
}

// TestRoundTrip checks that a parsed line written back reads the same, and
// that the written form is canonical.
func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct{ line, canonical string }{
		{"@a=b\\:c\\sd\\\\e\\r\\n;f :n!u@h PRIVMSG #c :x y", "@a=b\\:c\\sd\\\\e\\r\\n;f :n!u@h PRIVMSG #c :x y"},
		{"@z=1;a=\\q\\ PING", "@a=q;z=1 PING"},
		{"@k= ping :only", "@k PING only"},
		{"  :srv   001   me   :Welcome  ", ":srv 001 me :Welcome  "},
		{"PRIVMSG #c ::-)", "PRIVMSG #c ::-)"},
		{"TOPIC #c :", "TOPIC #c :"},
		{"NOTICE * :*** Looking up your hostname", "NOTICE * :*** Looking up your hostname"},
		{"@;; PING", "PING"},
	} {
		m, err := Parse(tc.line)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tc.line, err)
		}
		s, err := m.Marshal()
		if err != nil {
			t.Fatalf("Marshal of parsed %q: %v", tc.line, err)
		}
		if s != tc.canonical {
			t.Errorf("%q written as %q, want %q", tc.line, s, tc.canonical)
		}
		back, err := Parse(s)
		if err != nil {
			t.Fatalf("Parse(%q): %v", s, err)
		}
		if !reflect.DeepEqual(back, m) {
			t.Errorf("%q: round trip changed\n%#v\n%#v", tc.line, *m, *back)
		}
	}
}
