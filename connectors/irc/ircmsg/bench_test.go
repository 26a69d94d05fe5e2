package ircmsg

import (
	"strings"
	"testing"
)

// A typical line from a server with IRCv3 capabilities enabled.
const benchLine = "@badge-info=;msgid=4b7d0c2e-1f2a-4c3b-9d8e-7f6a5b4c3d2e;time=2024-05-01T12:00:00.000Z;+draft/reply=abc\\sdef" +
	" :someone!~someone@user/someone/x-12345 PRIVMSG #phonebridge :hello there, this is an ordinary chat message\r\n"

func BenchmarkParse(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchLine)))
	for b.Loop() {
		if _, err := Parse(benchLine); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseNoTags(b *testing.B) {
	line := benchLine[strings.IndexByte(benchLine, ' ')+1:]
	b.ReportAllocs()
	b.SetBytes(int64(len(line)))
	for b.Loop() {
		if _, err := Parse(line); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkString measures AppendTo into a reused buffer, as a connection
// writer would use it, and String, which allocates the result.
func BenchmarkString(b *testing.B) {
	m, err := Parse(benchLine)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("AppendTo", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 1024)
		for b.Loop() {
			buf = m.AppendTo(buf[:0])
		}
	})
	b.Run("String", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = m.String()
		}
	})
	b.Run("Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := m.Marshal(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkSplitText(b *testing.B) {
	text := strings.Repeat("hello wörld 日本語 \U0001F600 ", 100)
	b.ReportAllocs()
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		_ = SplitText(60, "#phonebridge", text, 0)
	}
}

func BenchmarkStripFormatting(b *testing.B) {
	text := strings.Repeat("\x02bold\x02 \x0304,12colour\x03 plain text ", 20)
	b.ReportAllocs()
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		_ = StripFormatting(text)
	}
}
