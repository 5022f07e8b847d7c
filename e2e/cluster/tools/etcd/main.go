// Command etcd is the stock etcd server. The upstream main package lives in
// the go.etcd.io/etcd/v3 module, which relies on local replace directives and
// so cannot be built from the module proxy; etcdmain is what it calls.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
