#include "skv/formats/file_io.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>

#include <gtest/gtest.h>

#include "skv/error.hpp"
#include "test_util.hpp"

namespace skv {
namespace {

using test::ScratchDir;

using test::error_code;

// Temporarily replaces a standard descriptor (stdin/stdout) with another.
class Redirect {
 public:
  Redirect(int target, int with) : target_(target), saved_(::dup(target)) { ::dup2(with, target); }
  ~Redirect() {
    ::dup2(saved_, target_);
    ::close(saved_);
  }

 private:
  int target_, saved_;
};

std::string pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = char((i * 131 + i / 977) & 0xff);
  return s;
}

TEST(InputFile, MapsRegularFiles) {
  ScratchDir d;
  const std::string content = pattern(100000);
  test::write_raw(d.path("a.bin"), content);
  InputFile f = InputFile::open(d.path("a.bin"));
  EXPECT_TRUE(f.mapped());
  ASSERT_EQ(f.bytes().size(), content.size());
  EXPECT_EQ(0, std::memcmp(f.bytes().data(), content.data(), content.size()));
  // Releasing pages must not change what is read afterwards.
  f.release(5000, 20000);
  f.release(90000, 1000000);
  EXPECT_EQ(0, std::memcmp(f.bytes().data(), content.data(), content.size()));
  InputFile moved = std::move(f);
  EXPECT_EQ(0, std::memcmp(moved.bytes().data(), content.data(), content.size()));
}

TEST(InputFile, EmptyFile) {
  ScratchDir d;
  test::write_raw(d.path("e"), "");
  InputFile f = InputFile::open(d.path("e"));
  EXPECT_EQ(f.bytes().size(), 0u);
}

TEST(InputFile, ReadsPipesIntoMemory) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  const std::string content = pattern(50000);  // below the pipe buffer, so no writer thread needed
  ASSERT_EQ(::write(p[1], content.data(), content.size()), ssize_t(content.size()));
  ::close(p[1]);
  InputFile f = InputFile::open("/proc/self/fd/" + std::to_string(p[0]));
  ::close(p[0]);
  EXPECT_FALSE(f.mapped());
  ASSERT_EQ(f.bytes().size(), content.size());
  EXPECT_EQ(0, std::memcmp(f.bytes().data(), content.data(), content.size()));
}

TEST(InputFile, DashIsStdin) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  ASSERT_EQ(::write(p[1], "hello", 5), 5);
  ::close(p[1]);
  Redirect r(STDIN_FILENO, p[0]);
  ::close(p[0]);
  InputFile f = InputFile::open("-");
  ASSERT_EQ(f.bytes().size(), 5u);
  EXPECT_EQ(0, std::memcmp(f.bytes().data(), "hello", 5));
}

TEST(InputFile, MissingFileNamesThePath) {
  std::string msg;
  EXPECT_EQ(error_code([] { InputFile::open("/nonexistent/skv/x.safetensors"); }, &msg), Errc::io);
  EXPECT_NE(msg.find("/nonexistent/skv/x.safetensors"), std::string::npos) << msg;
}

TEST(InputStream, ReadsSequentiallyAndReportsTruncation) {
  ScratchDir d;
  test::write_raw(d.path("s"), "abcdefgh");
  InputStream s = InputStream::open(d.path("s"));
  EXPECT_TRUE(s.seekable());
  char buf[8];
  s.read_exact(buf, 3, "magic");
  EXPECT_EQ(std::string(buf, 3), "abc");
  EXPECT_EQ(s.position(), 3u);
  std::string msg;
  EXPECT_EQ(error_code([&] { s.read_exact(buf, 8, "section header"); }, &msg), Errc::truncated);
  EXPECT_NE(msg.find("section header"), std::string::npos) << msg;
  EXPECT_NE(msg.find(d.path("s")), std::string::npos) << msg;
}

TEST(InputStream, DashIsStdin) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  ASSERT_EQ(::write(p[1], "xyz", 3), 3);
  ::close(p[1]);
  Redirect r(STDIN_FILENO, p[0]);
  ::close(p[0]);
  InputStream s = InputStream::open("-");
  EXPECT_FALSE(s.seekable());
  char buf[8];
  EXPECT_EQ(s.read(buf, 8), 3u);
  EXPECT_EQ(std::string(buf, 3), "xyz");
  EXPECT_EQ(s.read(buf, 8), 0u);
}

TEST(OutputFile, CommitRenamesIntoPlace) {
  ScratchDir d;
  const std::string target = d.path("out.bin");
  const std::string content = pattern(3 * 1024 * 1024 + 17);  // crosses the 1 MiB buffer
  {
    OutputFile out(target);
    size_t pos = 0, step = 1;
    while (pos < content.size()) {  // pieces of growing size, some larger than the buffer
      const size_t n = std::min(step, content.size() - pos);
      out.write(content.data() + pos, n);
      pos += n;
      step = step * 3 + 1;
    }
    EXPECT_EQ(out.bytes_written(), content.size());
    EXPECT_FALSE(std::filesystem::exists(target)) << "target must not appear before commit()";
    out.commit();
  }
  EXPECT_EQ(test::read_all(target), content);
  EXPECT_EQ(d.entries(), std::vector<std::string>{"out.bin"});
  struct stat st {};
  ASSERT_EQ(::stat(target.c_str(), &st), 0);
  const mode_t mask = ::umask(0);
  ::umask(mask);
  EXPECT_EQ(st.st_mode & 0777, 0666 & ~mask);
}

TEST(OutputFile, NoPartialFileWithoutCommit) {
  ScratchDir d;
  const std::string target = d.path("out.bin");
  try {
    OutputFile out(target);
    out.write(pattern(2 << 20).data(), 2 << 20);
    throw std::runtime_error("encoder failed");
  } catch (const std::runtime_error&) {
  }
  EXPECT_TRUE(d.entries().empty()) << "temporary file left behind";
}

TEST(OutputFile, RefusesToOverwriteWithoutForce) {
  ScratchDir d;
  const std::string target = d.path("out.bin");
  test::write_raw(target, "old");
  std::string msg;
  EXPECT_EQ(error_code([&] { OutputFile out(target); }, &msg), Errc::io);
  EXPECT_NE(msg.find("-f"), std::string::npos) << msg;
  EXPECT_NE(msg.find(target), std::string::npos) << msg;
  EXPECT_EQ(test::read_all(target), "old");
  {
    OutputFile out(target, {.force = true});
    out.write("new", 3);
    out.commit();
  }
  EXPECT_EQ(test::read_all(target), "new");
  EXPECT_EQ(d.entries().size(), 1u);
}

TEST(OutputFile, ForcedButUncommittedKeepsTheOldFile) {
  ScratchDir d;
  const std::string target = d.path("out.bin");
  test::write_raw(target, "old");
  {
    OutputFile out(target, {.force = true});
    out.write("partial", 7);
  }
  EXPECT_EQ(test::read_all(target), "old");
  EXPECT_EQ(d.entries().size(), 1u);
}

TEST(OutputFile, DashWritesStdout) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  {
    Redirect r(STDOUT_FILENO, p[1]);
    OutputFile out("-");
    out.write("data", 4);
    out.commit();
  }
  ::close(p[1]);
  char buf[16];
  EXPECT_EQ(::read(p[0], buf, sizeof buf), 4);
  EXPECT_EQ(std::string(buf, 4), "data");
  ::close(p[0]);
}

TEST(OutputFile, RefusesTerminalStdout) {
  const int master = ::posix_openpt(O_RDWR | O_NOCTTY);
  if (master < 0 || ::grantpt(master) != 0 || ::unlockpt(master) != 0)
    GTEST_SKIP() << "no pseudo-terminal available";
  const int slave = ::open(::ptsname(master), O_RDWR | O_NOCTTY);
  ASSERT_GE(slave, 0);
  {
    Redirect r(STDOUT_FILENO, slave);
    std::string msg;
    EXPECT_EQ(error_code([] { OutputFile out("-"); }, &msg), Errc::io);
    EXPECT_NE(msg.find("terminal"), std::string::npos) << msg;
    EXPECT_NO_THROW(OutputFile("-", {.allow_terminal = true}));
  }
  ::close(slave);
  ::close(master);
}

TEST(OutputFile, DeviceTargetsAreWrittenDirectly) {
  OutputFile out("/dev/null");
  out.write("x", 1);
  EXPECT_NO_THROW(out.commit());
}

TEST(OutputFile, NoSpaceIsAnIoErrorNamingThePath) {
  if (!std::filesystem::exists("/dev/full")) GTEST_SKIP() << "/dev/full not available";
  std::string msg;
  EXPECT_EQ(error_code([] {
              OutputFile out("/dev/full");
              out.write("x", 1);
              out.commit();
            }, &msg),
            Errc::io);
  EXPECT_NE(msg.find("/dev/full"), std::string::npos) << msg;
  EXPECT_NE(msg.find("no space"), std::string::npos) << msg;
}

TEST(OutputFile, BrokenPipeIsAnIoError) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  ::close(p[0]);
  auto old = std::signal(SIGPIPE, SIG_IGN);
  std::string msg;
  {
    Redirect r(STDOUT_FILENO, p[1]);
    EXPECT_EQ(error_code([] {
                OutputFile out("-");
                out.write("x", 1);
                out.commit();
              }, &msg),
              Errc::io);
  }
  std::signal(SIGPIPE, old);
  ::close(p[1]);
  EXPECT_NE(msg.find("broken pipe"), std::string::npos) << msg;
}

TEST(OutputFile, MissingDirectoryIsAnIoError) {
  EXPECT_EQ(error_code([] { OutputFile out("/nonexistent/skv/out.bin"); }), Errc::io);
}

}  // namespace
}  // namespace skv
