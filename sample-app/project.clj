(defproject sample-app "0.1.0"
  :description "Tiny Ring/Jetty/Compojure app used to exercise zero-downtime deploys."
  :license {:name "MIT"}
  ;; Versions chosen so they resolve both from Clojars/Central and from
  ;; Debian's /usr/share/maven-repo (used for offline test builds).
  :dependencies [[org.clojure/clojure "1.11.1"]
                 [ring/ring-core "1.8.2"]
                 [ring/ring-jetty-adapter "1.8.2"]
                 [compojure "1.6.0"]]
  :main sample-app.core
  ;; AOT the entry namespace so `java -jar target/*-standalone.jar` works.
  :aot [sample-app.core])
