// Command sockslab-go-socks5 serves github.com/armon/go-socks5 on a loopback address so that
// `sockslab check --peer go-socks5` can calibrate the catalogue against that library exactly as
// an application embedding it would run it: the library's defaults, plus optional static
// credentials (RFC 1929) when -user is given.
package main

import (
	"flag"
	"log"
	"net"
	"os"

	socks5 "github.com/armon/go-socks5"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:1080", "listen address (loopback only)")
	user := flag.String("user", "", "RFC 1929 username; empty means no authentication")
	pass := flag.String("pass", "", "RFC 1929 password")
	flag.Parse()

	host, _, err := net.SplitHostPort(*addr)
	if err != nil {
		log.Fatalf("bad -addr %q: %v", *addr, err)
	}
	// The lab only ever talks to loopback; refuse anything else rather than expose a proxy.
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		log.Fatalf("-addr must be a loopback IP address, got %q", host)
	}

	conf := &socks5.Config{Logger: log.New(os.Stderr, "go-socks5: ", log.LstdFlags)}
	if *user != "" {
		conf.Credentials = socks5.StaticCredentials{*user: *pass}
	}
	server, err := socks5.New(conf)
	if err != nil {
		log.Fatalf("configure: %v", err)
	}
	if err := server.ListenAndServe("tcp", *addr); err != nil {
		log.Fatalf("serve: %v", err)
	}
}
