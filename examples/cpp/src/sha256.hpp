// SHA-256 of a file through OpenSSL's EVP interface (libcrypto), as hex.
#pragma once

#include <string>

namespace sd4match::engine {

//! Lower-case hex SHA-256 of the file at `path`, read in 8 MiB blocks. Throws Error (Engine)
//! when the file cannot be read, Error (Runtime) when OpenSSL fails.
std::string file_sha256(const std::string& path);

}  // namespace sd4match::engine
