package whatsapp

import "testing"

func TestIsChatID(t *testing.T) {
	c := &Connector{}
	for id, want := range map[string]bool{
		"15551234567@s.whatsapp.net":      true,
		"120363025246125486@g.us":         true,
		"123456789012345@lid":             true,
		"status@broadcast":                true,
		"15551234567:3@s.whatsapp.net":    true, // a device JID still names the user's chat
		"general":                         false,
		"":                                false,
		"@s.whatsapp.net":                 false,
		"15551234567@example.org":         false,
		"!room:matrix.org":                false,
		"15551234567@s.whatsapp.net@g.us": false,
	} {
		if got := c.IsChatID(id); got != want {
			t.Errorf("IsChatID(%q) = %v, want %v", id, got, want)
		}
	}
}
