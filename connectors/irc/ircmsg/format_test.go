package ircmsg

import (
	"strings"
	"testing"
)

func TestStripFormatting(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain text", "plain text"},
		{"", ""},
		{"\x02bold\x02 \x1ditalic\x1d \x1funder\x1f", "bold italic under"},
		{"\x1estrike\x1e \x11mono\x11 \x16rev\x16 x\x0fy", "strike mono rev xy"},
		{"\x034red", "red"},
		{"\x0304red", "red"},
		{"\x03045", "5"},               // two digits at most
		{"\x034,12on blue", "on blue"}, // background
		{"\x0304,02x", "x"},
		{"\x034,123", "3"},       // background two digits at most
		{"\x034,x", ",x"},        // ',' without a background is text
		{"\x034,", ","},          // ',' at the end is text
		{"\x03,12x", ",12x"},     // no background without a foreground
		{"\x03reset", "reset"},   // bare \x03 resets colour
		{"a\x03", "a"},           // at the end
		{"\x0399,99x", "x"},      // 99 is "default", still stripped
		{"1\x032\x033", "1"},     // digits after each \x03 are codes
		{"\x04FF0000red", "red"}, // hex colour
		{"\x04ff00AAx", "x"},     // either case
		{"\x04FF0000,00FF00x", "x"},
		{"\x04FF0000,00FFx", ",00FFx"}, // short background is text
		{"\x04FF00x", "FF00x"},         // short foreground: only \x04 goes
		{"\x04,FF0000x", ",FF0000x"},
		{"\x04GG0000x", "GG0000x"},
		{"\x04", ""},
		{"日本\x02語\x0f", "日本語"},
		{"\x03" + "4😀", "😀"},
		{"\xff\x02\xfe", "\xff\xfe"},             // invalid UTF-8 passes through
		{"\x01ACTION x\x01", "\x01ACTION x\x01"}, // CTCP is not formatting
		{"tab\tand\x07bell", "tab\tand\x07bell"}, // other controls stay
	} {
		got := StripFormatting(tc.in)
		if got != tc.want {
			t.Errorf("StripFormatting(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if again := StripFormatting(got); again != got {
			t.Errorf("not idempotent on %q: %q then %q", tc.in, got, again)
		}
	}
}

func TestStripFormattingNoAllocWhenPlain(t *testing.T) {
	s := strings.Repeat("plain text ", 40)
	if n := testing.AllocsPerRun(100, func() { _ = StripFormatting(s) }); n != 0 {
		t.Errorf("%v allocations stripping text without codes", n)
	}
}
