// Package all links every connector type into a binary: importing it runs
// each connector package's init, which registers its type with the core.
package all

import (
	_ "github.com/phonebridge/phonebridge/connectors/api"      // type "api"
	_ "github.com/phonebridge/phonebridge/connectors/irc"      // type "irc"
	_ "github.com/phonebridge/phonebridge/connectors/matrix"   // type "matrix"
	_ "github.com/phonebridge/phonebridge/connectors/whatsapp" // type "whatsapp"
)
