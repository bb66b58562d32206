// Package gen holds the generated protobuf and gRPC code of Vigil's protocol
// and the .proto sources it is generated from. Run `make generate` after
// changing a .proto file; the output is committed so a build needs no protoc.
package gen

//go:generate sh -c "protoc --plugin=protoc-gen-go=$(go tool -n protoc-gen-go) --plugin=protoc-gen-go-grpc=$(go tool -n protoc-gen-go-grpc) --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative vigil/v1/vigil.proto"
