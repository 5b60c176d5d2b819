// Errors of the C++ example. Every failure the program expects (bad arguments, bad input files,
// an engine that does not match its manifest) is an sd4match::engine::Error whose message says
// what is wrong and how to fix it; the command-line program prints it and exits non-zero.
#pragma once

#include <stdexcept>
#include <string>

namespace sd4match::engine {

//! What kind of problem an Error reports (the CLI maps kinds to exit codes).
enum class ErrorKind {
    Usage,    //!< command-line arguments
    Input,    //!< images, points, noise files
    Engine,   //!< the engine directory: manifest, files, graphs
    Runtime,  //!< ONNX Runtime / TensorRT / kernel failures while running
};

class Error : public std::runtime_error {
  public:
    Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
    ErrorKind kind() const noexcept { return kind_; }

  private:
    ErrorKind kind_;
};

inline Error usage_error(const std::string& m) { return Error(ErrorKind::Usage, m); }
inline Error input_error(const std::string& m) { return Error(ErrorKind::Input, m); }
inline Error engine_error(const std::string& m) { return Error(ErrorKind::Engine, m); }
inline Error runtime_error(const std::string& m) { return Error(ErrorKind::Runtime, m); }

}  // namespace sd4match::engine
